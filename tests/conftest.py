import os

# Headless MuJoCo for every test, also when pytest runs outside `make test` (dm_control reads it on import).
os.environ.setdefault("MUJOCO_GL", "egl")
