import os

# Headless MuJoCo for every test, also when pytest runs outside `make test` (dm_control reads it on import).
os.environ.setdefault("MUJOCO_GL", "egl")

import pytest  # noqa: E402


@pytest.fixture(scope="module")
def one_torch_thread():
    """The t2i test models are tiny: one thread is fastest, and robust when other jobs share the two cores.
    Modules opt in with `pytestmark = pytest.mark.usefixtures("one_torch_thread")`."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
