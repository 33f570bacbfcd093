"""One-step FB (Zheng, Jayanth, Eysenbach, 2026: "Can We Really Learn One Representation to Optimize
All Rewards?"), a torch port of the semantics of the reference `agents/onestep_fb.py` (fb.md §3).

Two changes from FB make the representation a plain policy evaluation of the data:
  1. F has no latent input: F(s, a) is the successor measure of the behaviour policy beta;
  2. SARSA target: the next action a' is the dataset's next action, so no actor enters Eq. 12.
The policy is then a z-conditioned one-step greedy improvement of beta: argmax_a F(s, a)^T z
(discrete actions).  Zheng convention throughout (losses.py): B(s, a), (1 - gamma) positives.

Read top to bottom: Config -> OneStepFB (networks, update = Eq. 12, inference, policy) -> run().
"""
from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import nn

from algorithms.fb import losses
from algorithms.fb.common import (DTYPES, LR_SCHEDULES, aggregate_heads, all_actions_for, batch_to,
                                  check_choices, check_positive, frozen_copy, polyak_update, require_discrete,
                                  resolve_dtype, train_and_evaluate)
from algorithms.fb.networks import ARCHS, build_map, map_inputs
from suites.zeroshot import TransitionBatch


@dataclasses.dataclass(frozen=True)
class Config:
    """Defaults are the reference's `get_config` (fb.md §3.1); suites' YAML grids override them."""

    num_steps: int = 1_000_000
    """Gradient steps (reference `train_steps`)."""
    batch_size: int = 1024
    """Transitions per step.  Ignored when the task hands out its whole weighted support (didactic 'exact')."""
    lr: float = 1e-4
    """Adam learning rate for F and B."""
    lr_schedule: str = "constant"
    """'constant' (the reference) or 'cosine' (decay to 0 over num_steps; removes Adam's noise floor)."""
    latent_dim: int = 128
    """d, the dimension of F, B and z."""
    discount: float | None = None
    """gamma; None uses the task's (the CMP's gamma in the didactic suite, which its ground truth uses)."""
    tau: float = 0.005
    """Polyak rate of the target F and B."""
    orthonorm_coeff: float = 0.0
    """Weight of the orthonormality loss on B."""
    forward_heads: int = 2
    """Independent F heads (the reference's vmapped ensemble)."""
    repr_agg: str = "mean"
    """How target heads combine in the TD target: 'mean' or 'min'."""
    q_agg: str = "min"
    """How heads combine in Q for the policy: 'mean' or 'min'."""
    latent_mix_prob: float = 0.5
    """Share of training latents taken from projected B of batch goals (only the actor uses latents)."""
    reward_temperature: float = 10.0
    """T in the inference weights softmax(T r); 0 gives the plain E[r B]."""
    arch: str = "mlp"
    """'mlp', or 'tabular' for one-hot inputs (didactic)."""
    forward_hidden: tuple[int, ...] = (512, 512, 512, 512)
    """Hidden widths of F (mlp only)."""
    backward_hidden: tuple[int, ...] = (512, 512, 512, 512)
    """Hidden widths of B (mlp only)."""
    dtype: str = "float32"
    """'float32' or 'float64' for parameters and losses."""
    log_every: int = 1000
    """Log training losses every this many steps."""
    eval_every: int = 100_000
    """Evaluate zero-shot every this many steps (and at the start and the end)."""
    checkpoint_every: int = 50_000
    """Save a resumable checkpoint every this many steps."""

    def __post_init__(self):
        check_choices(self, arch=ARCHS, dtype=tuple(DTYPES), lr_schedule=LR_SCHEDULES,
                      repr_agg=("mean", "min"), q_agg=("mean", "min"))
        check_positive(self, "num_steps", "batch_size", "lr", "latent_dim", "forward_heads", "log_every",
                       "eval_every", "checkpoint_every")


class OneStepFB(nn.Module):
    goal_space = "state_action"
    represents = "behaviour"

    def __init__(self, cfg: Config, obs_dim: int, action_dim: int, n_actions: int, gamma: float):
        super().__init__()
        self.cfg, self.n_actions, self.gamma = cfg, n_actions, gamma
        self.dtype = resolve_dtype(cfg.dtype)
        d = cfg.latent_dim
        self.forward_net = build_map(cfg.arch, obs_dim, action_dim, d, uses_action=True,
                                     heads=cfg.forward_heads, hidden=cfg.forward_hidden)      # F_e(s, a)
        self.backward_net = build_map(cfg.arch, obs_dim, action_dim, d, uses_action=True,
                                      hidden=cfg.backward_hidden)                            # B(s, a)
        self.to(self.dtype)
        self.target_forward, self.target_backward = frozen_copy(self.forward_net), frozen_copy(self.backward_net)
        self.optimizer = torch.optim.Adam([*self.forward_net.parameters(), *self.backward_net.parameters()],
                                          lr=cfg.lr)

    # ---- maps ---------------------------------------------------------------------------------
    def F(self, obs, action, net=None):
        return (net or self.forward_net)(map_inputs(self.cfg.arch, obs, action))            # [E, N, d]

    def B(self, obs, action, net=None):
        return (net or self.backward_net)(map_inputs(self.cfg.arch, obs, action))[0]        # [N, d]

    # ---- one gradient step: the representation loss, Eq. 12 ------------------------------------
    def update(self, batch: TransitionBatch, generator: torch.Generator) -> dict[str, torch.Tensor]:
        b = batch_to(batch, self.dtype)
        cfg = self.cfg
        with torch.no_grad():  # SARSA target with the DATA's next action: mean_e F_bar_e(s', a') B_bar(g)^T
            target_F = self.F(b.next_obs, b.next_action, self.target_forward)
            target_B = self.B(b.obs, b.action, self.target_backward)
            target_M = aggregate_heads(target_F @ target_B.T, cfg.repr_agg)
        F = self.F(b.obs, b.action)
        B = self.B(b.obs, b.action)                      # goals are the rows' own (s, a): the positives
        M = F @ B.T                                      # [E, N, N]: M_e[i, j] = F_e(x_i)^T B(x_j)
        fb_loss, parts = losses.successor_loss(M, target_M, self.gamma, "zheng", b.weight)
        ortho = losses.orthonormality_loss(B, "zheng", b.weight)
        loss = fb_loss + cfg.orthonorm_coeff * ortho
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        polyak_update(self.target_forward, self.forward_net, cfg.tau)
        polyak_update(self.target_backward, self.backward_net, cfg.tau)
        return {"loss": loss.detach(), "fb_offdiag": parts["offdiag"], "fb_diag": parts["diag"],
                "orthonormality": ortho.detach()}

    # ---- zero-shot inference and the one-step policy -------------------------------------------
    @torch.no_grad()
    def infer_task_vector(self, batch: TransitionBatch, reward: torch.Tensor) -> torch.Tensor:
        """z_r = E[softmax(T r) r B(s, a)] (not projected; the policy is invariant to its norm)."""
        b = batch_to(batch, self.dtype)
        return losses.infer_task_vector(self.B(b.obs, b.action), reward.to(self.dtype), b.weight,
                                        self.cfg.reward_temperature)

    @torch.no_grad()
    def predict_q(self, obs, action, z) -> torch.Tensor:
        """Q^beta_r(s, a) = F(s, a)^T z_r / (1 - gamma) (normalised successor measure)."""
        q = torch.einsum("end,d->en", self.F(obs.to(self.dtype), action.to(self.dtype)), z.to(self.dtype))
        return aggregate_heads(q, self.cfg.q_agg) / (1.0 - self.gamma)

    @torch.no_grad()
    def predict_successor_ratio(self, obs, action, goal_obs, goal_action, z=None) -> torch.Tensor:
        F = aggregate_heads(self.F(obs.to(self.dtype), action.to(self.dtype)), "mean")
        return F @ self.B(goal_obs.to(self.dtype), goal_action.to(self.dtype)).T

    @torch.no_grad()
    def act(self, obs, z) -> torch.Tensor:
        """argmax_a Q^beta_z(s, a): the one-step policy improvement (discrete actions)."""
        all_obs, all_act = all_actions_for(obs.to(self.dtype), self.n_actions)
        return self.predict_q(all_obs, all_act, z).reshape(-1, self.n_actions).argmax(1)

    def state_dict(self, *args, **kwargs) -> dict[str, Any]:
        return {"nets": super().state_dict(*args, **kwargs), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict[str, Any], strict: bool = True):
        super().load_state_dict(state["nets"], strict=strict)
        self.optimizer.load_state_dict(state["optimizer"])


def run(task: Any, cfg: Config, run: Any) -> None:
    """Adapter entry point: train on the task's reward-free data, evaluate zero-shot, write results."""
    require_discrete(task, "onestep_fb")
    torch.manual_seed(run.seed)
    gamma = task.gamma if cfg.discount is None else cfg.discount
    agent = OneStepFB(cfg, task.obs_dim, task.action_dim, task.n_actions, gamma)
    train_and_evaluate(agent, task, cfg, run)
