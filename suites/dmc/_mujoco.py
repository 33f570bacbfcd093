"""Import before dm_control (every dmc module that imports it does).

- Headless rendering: MUJOCO_GL defaults to egl (env.md §2); Mesa's llvmpipe renders with one thread per
  process (LP_NUM_THREADS=1 unless set): a trial or a render worker has one core of its own.
- Load triton's LLVM before Mesa's: with MUJOCO_GL=egl, importing dm_control pulls Mesa's LLVM into the
  process, and torch's first optimiser (torch._dynamo -> triton) then loads a second, clashing LLVM and
  the process segfaults.  Loading triton first (0.1 s) avoids it.
"""
import os

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("LP_NUM_THREADS", "1")
try:
    import triton._C.libtriton  # noqa: F401
except ImportError:  # no triton (a CPU-only torch build): nothing to clash with
    pass
