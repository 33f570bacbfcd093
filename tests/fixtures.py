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
    """The environment of a CLI subprocess: the bench's own Ray and allocator defaults (a local cluster on
    loopback with token authentication: no RAY_* or MALLOC_* settings from the caller), offline Hugging
    Face, headless MuJoCo, unbuffered output, and no B2FB_RESULTS / B2FB_DATA from the caller (the command
    names its directories)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    for key in RAY_SETTINGS + ALLOCATOR_KEYS + ("B2FB_RESULTS", "B2FB_DATA"):
        env.pop(key, None)
    env.setdefault("MUJOCO_GL", "egl")
    return env


RAY_SETTINGS = ("RAY_ADDRESS", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH",
                "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER")
ALLOCATOR_KEYS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")   # orchestrate sets them for its trials


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


def build_tiny_open_clip_dir(out_dir: Path, seed: int = 0) -> Path:
    """A tiny random open_clip model written as an open_clip local dir (open_clip_config.json +
    open_clip_pytorch_model.bin), built from a config: the stand-in for ViT-H-14's checkpoint in tests of
    the `paper` path (`task.reward_checkpoint=DIR`, `task.reward_arch=null`).  Nothing is downloaded."""
    import json

    import open_clip
    import torch

    config = {"model_cfg": {"embed_dim": 16,
                            "vision_cfg": {"image_size": 32, "patch_size": 8, "width": 32, "layers": 1,
                                           "head_width": 16, "mlp_ratio": 2.0},
                            "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2,
                                         "layers": 1}},
              "preprocess_cfg": {"size": 32, "mode": "RGB", "mean": [0.48145466, 0.4578275, 0.40821073],
                                 "std": [0.26862954, 0.26130258, 0.27577711], "interpolation": "bicubic",
                                 "resize_mode": "shortest", "fill_color": 0}}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = open_clip.model.CLIP(**config["model_cfg"])
    (out / "open_clip_config.json").write_text(json.dumps(config, indent=2))
    torch.save(model.state_dict(), out / "open_clip_pytorch_model.bin")
    return out


def sha256_file(path: Path) -> str:
    import hashlib
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


# ---- Ray processes and their sockets (tests of what a bench exposes to the network) ----------------------
def is_loopback(ip: str) -> bool:
    import ipaddress
    address = ipaddress.ip_address(ip)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


def listening_sockets(processes) -> list[tuple]:
    """(pid, process name, ip, port, RAY_AUTH_MODE of the process) of every TCP listener of `processes`."""
    import psutil
    out = []
    for p in processes:
        try:
            auth = p.environ().get("RAY_AUTH_MODE")
            for c in p.net_connections(kind="tcp"):
                if c.status == psutil.CONN_LISTEN:
                    out.append((p.pid, p.name(), c.laddr.ip, c.laddr.port, auth))
        except psutil.Error:        # exited meanwhile
            pass
    return out


def unauthenticated_listeners(sockets) -> list[tuple]:
    """Listeners reachable beyond this machine (not on loopback) whose process runs without Ray's token
    authentication: what an attacker on the network could use to run code as this user."""
    return [s for s in sockets if not is_loopback(s[2]) and (s[4] or "").lower() != "token"]


def kill_processes(processes, grace: float = 5.0) -> None:
    """SIGTERM, then SIGKILL what is left after `grace` seconds: only the given processes."""
    import psutil
    alive = []
    for p in processes:
        try:
            p.terminate()
            alive.append(p)
        except psutil.Error:
            pass
    _, left = psutil.wait_procs(alive, timeout=grace)
    for p in left:
        try:
            p.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(left, timeout=grace)
