"""Shared test data."""

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
