"""Shared test data and helpers."""
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def b2fb_command(tmp: Path, *args: str) -> list[str]:
    """`python -m benchmarks` with results and data directories under `tmp`."""
    return [sys.executable, "-m", "benchmarks", "--results-dir", str(tmp / "results"), "--data-dir", str(tmp / "data"),
            *args]


def cli_env() -> dict[str, str]:
    """The environment of a CLI subprocess: no Ray auth, offline Hugging Face, headless MuJoCo, unbuffered
    output, and no B2FB_RESULTS / B2FB_DATA from the caller (the command names its directories)."""
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    env.setdefault("MUJOCO_GL", "egl")
    env.pop("B2FB_RESULTS", None)
    env.pop("B2FB_DATA", None)
    return env


def b2fb(tmp: Path, *args: str, timeout: float, **kwargs) -> subprocess.CompletedProcess:
    """Run the CLI to completion (output captured as text) and return the finished process."""
    return subprocess.run(b2fb_command(tmp, *args), cwd=REPO, env=cli_env(), capture_output=True, text=True,
                          timeout=timeout, **kwargs)

# A valid two-state, two-action CMP file (didactic/custom-v0).
TWO_STATE_CMP = """\
name: two-state
gamma: 0.9
transitions:
  - [[0.0, 1.0], [1.0, 0.0]]
  - [[0.0, 1.0], [0.5, 0.5]]
behaviour_policy: [[0.5, 0.5], [0.5, 0.5]]
rho: [0.5, 0.5]
"""


class MemoryWriter:
    """A results writer that keeps everything in memory: the adapter's whole view of results (what
    `benchmarks.results.RunWriter` offers), for running an algorithm in-process without Ray."""

    def __init__(self, seed: int = 0, device: str = "cpu"):
        self.seed, self.device = seed, device
        self.rows, self.samples, self.artifacts, self.state = [], [], {}, None
        self.eval = {}          # step -> the evaluation metrics logged at that step

    def log(self, step, metrics, split):
        self.rows += [{"step": step, "split": split, "metric": k, "value": v} for k, v in metrics.items()]
        if split == "eval":
            self.eval[step] = dict(metrics)

    def add_samples(self, rows, step):
        self.samples += [{"step": step, **r} for r in rows]

    def save_artifact(self, name, data):
        self.artifacts[name] = data

    def progress(self, iterable, total, initial=0):
        yield from iterable

    def save_checkpoint(self, state, step):
        self.state = state

    def load_checkpoint(self):
        return None
