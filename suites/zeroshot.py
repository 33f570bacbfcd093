"""The contract between zero-shot RL suites (`didactic`, `dmc`) and zero-shot algorithms (FB family).

A suite's task object gives the algorithm reward-free transitions and, after training, evaluates the
trained agent; the algorithm never sees how evaluation is done, and the suite never sees losses.

Transitions follow the one-step FB data convention (fb.md §7.1): row i is `(s_i, a_i, s'_i, a'_i)`
where `a'_i` is the action the behaviour policy took in `s'_i`.  Algorithms that do not need `a'`
(Touati's FB) ignore it.

A batch may carry per-row probabilities `weight`.  Then the rows are the *support* of the data
distribution and every loss becomes its exact population expectation (pair weights `w_i w_j`,
diagonal included).  Without weights the rows are i.i.d. samples and the losses use the reference
code's minibatch estimators (mean over i != j).  Both go through the same loss functions
(`algorithms/fb/losses.py`).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Protocol, runtime_checkable

__all__ = ["TransitionBatch", "ZeroShotAgent", "ZeroShotTask", "EvalResult"]


@dataclasses.dataclass
class TransitionBatch:
    """Tensors (torch) of shape [N, ...]; `weight` is None for i.i.d. minibatches."""

    obs: Any
    action: Any
    next_obs: Any
    next_action: Any
    weight: Any = None

    def __len__(self) -> int:
        return int(self.obs.shape[0])


@dataclasses.dataclass
class EvalResult:
    """What one evaluation returns: scalar metrics and one row per evaluation unit."""

    metrics: dict[str, float]
    samples: list[dict[str, Any]]


@runtime_checkable
class ZeroShotAgent(Protocol):
    """What a suite may ask of a trained zero-shot agent (torch tensors in and out).

    goal_space:  "state" (Touati: B(s')) or "state_action" (Zheng: B(s, a)).
    represents:  "optimal" (FB: F(., z) is the successor measure of pi_z, greedy in z) or
                 "behaviour" (one-step FB: F is the successor measure of the data's policy).
    """

    goal_space: str
    represents: str

    def infer_task_vector(self, batch: TransitionBatch, reward: Any) -> Any:
        """z for a reward; `reward[i]` is r(s'_i), the reward of the row's next state."""

    def predict_successor_ratio(self, obs: Any, action: Any, goal_obs: Any, goal_action: Any,
                                z: Any) -> Any:
        """[N, K] estimate of M(s_i, a_i, goal_k) / rho(goal_k) in the agent's own convention."""

    def predict_q(self, obs: Any, action: Any, z: Any) -> Any:
        """[N] estimate of Q(s, a) = E[sum_t gamma^t r(s_{t+1})] for the reward that z encodes."""

    def act(self, obs: Any, z: Any) -> Any:
        """The deterministic evaluation action for each row."""


class ZeroShotTask(Protocol):
    """A zero-shot task: reward-free data for training, its own evaluation protocol.

    Building a task (its registry entry point) must be cheap and must validate its inputs: the CLI
    builds every task of a grid once before scheduling, so a bad file fails in one line up front.
    Heavy work (loading a large dataset) happens lazily, on first `sample`.
    """

    obs_dim: int
    action_dim: int
    discrete_actions: bool
    gamma: float

    def sample(self, batch_size: int, generator: Any) -> TransitionBatch: ...

    def evaluate(self, agent: ZeroShotAgent) -> EvalResult: ...

    def data_hashes(self) -> dict[str, str]: ...
