"""One-step FB (Zheng, Jayanth, Eysenbach, 2026: "Can We Really Learn One Representation to Optimize
All Rewards?"), a torch port of the semantics of the reference `agents/onestep_fb.py` (fb.md §3).

Two changes from FB make the representation a plain policy evaluation of the data:
  1. F has no latent input: F(s, a) is the successor measure of the behaviour policy beta;
  2. SARSA target: the next action a' is the dataset's next action, so no actor enters Eq. 12.
The policy is then a z-conditioned one-step greedy improvement of beta: argmax_a F(s, a)^T z for
discrete actions; for continuous actions an actor trained on the same step to maximise F(s, a)^T z
(normalised), optionally with behaviour cloning (Eq. 13).  Zheng convention throughout (losses.py): B(s, a), (1 - gamma) positives.

Read top to bottom: Config -> OneStepFB (networks, update = Eq. 12, inference, policy) -> run().
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any

import torch

from algorithms.fb import losses
from algorithms.fb.encoders import EncoderConfig, Observations, check_encoder_config
from algorithms.fb.common import (DTYPES, LR_SCHEDULES, CheckpointedAgent, adam, aggregate_heads,
                                  all_actions_for, batch_to, call_frozen, check_choices, check_positive, frozen_copy,
                                  polyak_update, resolve_dtype, train_and_evaluate)
from algorithms.fb.networks import ACTIVATIONS, ARCHS, GaussianActor, build_map, map_inputs
from algorithms.registry import added_field
from suites.zeroshot import TransitionBatch


@dataclasses.dataclass(frozen=True)
class Config(EncoderConfig):
    """Defaults are the reference's `get_config` (fb.md §3.1); suites' YAML grids override them."""

    num_steps: int = 1_000_000
    """Gradient steps (reference `train_steps`)."""
    batch_size: int = 1024
    """Transitions per step.  Ignored when the task hands out its whole weighted support (didactic 'exact')."""
    lr: float = 1e-4
    """Adam learning rate for F, B and the actor (one optimiser, as the reference)."""
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
    """Share of training latents that are Gaussian directions; the rest are projected B(s, a) of batch rows
    (the reference's `jnp.where(u < latent_mix_prob, gaussian, B)`).  Only the actor uses latents."""
    reward_temperature: float = 10.0
    """T in the inference weights softmax(T r); 0 gives the plain E[r B]."""
    arch: str = "mlp"
    """'mlp', or 'tabular' for one-hot inputs (didactic)."""
    forward_hidden: tuple[int, ...] = (512, 512, 512, 512)
    """Hidden widths of F (mlp only)."""
    backward_hidden: tuple[int, ...] = (512, 512, 512, 512)
    """Hidden widths of B (mlp only)."""
    actor_hidden: tuple[int, ...] = (512, 512, 512, 512)
    """Hidden widths of the actor (continuous actions only)."""
    activation: str = "gelu"
    """Activation of the middle layers of F, B and the actor ('relu' in the reference's ExORL commands)."""
    forward_layer_norm: bool = True
    """LayerNorm after the first layer of F (the reference's key is the typo `fackward_repr_layer_norm`)."""
    backward_layer_norm: bool = True
    """LayerNorm after the first layer of B."""
    actor_layer_norm: bool = False
    """LayerNorm after the first layer of the actor."""
    alpha: float = 1.0
    """Weight of the behaviour-cloning term -log pi(a_data | s, z) (0 in the ExORL commands)."""
    tanh_squash: bool = True
    """Squash the actor's Gaussian with tanh (False in the ExORL commands)."""
    normalize_q_loss: bool = True
    """Divide the actor's Q loss by stop_gradient(mean |Q|)."""
    actor_mean_init_scale: float = 0.01
    """Initial scale of the actor's mean layer (`actor_fc_scale`).  The std is constant 1 (`const_std`)."""
    dtype: str = "float32"
    """'float32' or 'float64' for parameters and losses."""
    bf16: bool = False
    """Run the update under torch.autocast(bfloat16): ~2.6x faster on CPUs with AVX-512 BF16 (env.md §5).
    Off by default (the references train in fp32)."""
    log_every: int = 1000
    """Log training losses every this many steps."""
    eval_every: int = 100_000
    """Evaluate zero-shot every this many steps (and at the end; at the start too with eval_at_start)."""
    eval_at_start: bool = added_field(True, added="issue 18: the cpu pixel grid skips the untrained "
                                                  "evaluation (half of a pixel trial's rendered rollouts)")
    """Evaluate the untrained agent at step 0 as well.  Off only saves time: evaluation is deterministic
    (fixed episode seeds and inference samples) and draws nothing from the training generator."""
    checkpoint_every: int = 50_000
    """Save a resumable checkpoint every this many steps."""

    def __post_init__(self):
        check_choices(self, arch=ARCHS[:2], dtype=tuple(DTYPES), lr_schedule=LR_SCHEDULES,
                      repr_agg=("mean", "min"), q_agg=("mean", "min"), activation=tuple(ACTIVATIONS))
        check_positive(self, "num_steps", "batch_size", "lr", "latent_dim", "forward_heads", "log_every",
                       "eval_every", "checkpoint_every")
        check_encoder_config(self)


class OneStepFB(CheckpointedAgent):
    goal_space = "state_action"
    represents = "behaviour"

    def __init__(self, cfg: Config, obs_dim: int | tuple[int, int, int], action_dim: int, n_actions: int,
                 gamma: float):
        super().__init__()
        self.cfg, self.n_actions, self.gamma = cfg, n_actions, gamma
        self.dtype = resolve_dtype(cfg.dtype)
        d = cfg.latent_dim
        mlp = dict(activation=cfg.activation, init="xavier", ln_eps=1e-6)  # flax defaults of the reference
        # Pixels (encoders.py): images [C, H, W] become features; the maps below are built on features.
        self.observations = Observations(cfg, obs_dim)
        obs_dim, wrap = self.observations.feature_dim, self.observations.wrap_map
        self.forward_net = wrap(build_map(cfg.arch, obs_dim, action_dim, d, uses_action=True,
                                          heads=cfg.forward_heads, hidden=cfg.forward_hidden,
                                          layer_norm=cfg.forward_layer_norm, **mlp))            # F_e(s, a)
        self.backward_net = wrap(build_map(cfg.arch, obs_dim, action_dim, d, uses_action=True,
                                           hidden=cfg.backward_hidden, layer_norm=cfg.backward_layer_norm,
                                           **mlp))                                                  # B(s, a)
        # Continuous actions: the actor pi(s, z).  Built after F and B so discrete runs draw the same init.
        self.actor = self.observations.wrap_actor(
            None if n_actions else
            GaussianActor(obs_dim, d, action_dim, cfg.actor_hidden, cfg.actor_layer_norm, cfg.activation,
                          cfg.tanh_squash, cfg.actor_mean_init_scale))
        self.to(self.dtype)
        self.target_forward, self.target_backward = frozen_copy(self.forward_net), frozen_copy(self.backward_net)
        params = [*self.forward_net.parameters(), *self.backward_net.parameters(),
                  *self.observations.parameters()]
        self.optimizer = adam(params + ([] if self.actor is None else [*self.actor.parameters()]), lr=cfg.lr)

    # ---- maps ---------------------------------------------------------------------------------
    def F(self, obs, action, net=None):
        return (net or self.forward_net)(map_inputs(self.cfg.arch, obs, action))            # [E, N, d]

    def B(self, obs, action, net=None):
        return (net or self.backward_net)(map_inputs(self.cfg.arch, obs, action))[0]        # [N, d]

    # ---- one gradient step: the representation loss, Eq. 12 ------------------------------------
    def update(self, batch: TransitionBatch, generator: torch.Generator) -> dict[str, torch.Tensor]:
        b = self.observations.train_batch(batch_to(batch, self.dtype, self.device),
                                          generator)  # pixels: shift, encode
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
        logs = {"fb_offdiag": parts["offdiag"], "fb_diag": parts["diag"], "orthonormality": ortho.detach()}
        if self.actor is not None:  # Eq. 13, on the same parameters, in the same optimiser step
            # a shared pixel encoder learns from Eq. 12 only: the actor reads its features detached (DrQ-v2)
            actor_batch = TransitionBatch(b.obs.detach(), b.action, b.next_obs, b.next_action, b.weight)
            actor_loss, actor_logs = self.actor_loss(actor_batch, generator, B.detach())
            loss = loss + actor_loss
            logs.update(actor_logs)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        polyak_update(self.target_forward, self.forward_net, cfg.tau)
        polyak_update(self.target_backward, self.backward_net, cfg.tau)
        return {"loss": loss.detach(), **logs}

    # ---- the one step of policy improvement, Eq. 13 (continuous actions) -------------------------
    def actor_loss(self, b: TransitionBatch, generator: torch.Generator, goal_B: torch.Tensor
                   ) -> tuple[torch.Tensor, dict]:
        """-Q_z(s, pi(s, z)) / stop_grad(mean |Q|) + alpha * (-log pi(a_data | s, z)), with
        Q_z(s, a) = agg_e F_e(s, a)^T z and F held fixed (no gradient into F from this loss).
        goal_B: B(s, a) of the batch (no gradient), from which mixed latents are drawn."""
        cfg, n = self.cfg, len(b)
        z = losses.sample_latents(n, cfg.latent_dim, generator, 1.0 - cfg.latent_mix_prob, goal_B, None, self.dtype)
        action = self.actor(b.obs, z).clamp(-1.0, 1.0)            # the mode (const_std), clipped
        F = call_frozen(self.forward_net, map_inputs(cfg.arch, b.obs, action))
        q = aggregate_heads(torch.einsum("end,nd->en", F, z), cfg.q_agg)
        q_loss = -q.mean()
        if cfg.normalize_q_loss:
            q_loss = q_loss / q.abs().mean().detach()
        bc_loss = -self.log_prob(b.obs, z, b.action).mean()
        return q_loss + cfg.alpha * bc_loss, {"actor_q_loss": q_loss.detach(), "actor_bc_loss": bc_loss.detach(),
                                              "actor_q": q.mean().detach()}

    def log_prob(self, obs, z, action):
        """log pi(a | s, z) of the actor's Gaussian N(mu, I) (through tanh when tanh_squash)."""
        mu = self.actor.pre_squash_mean(obs, z)
        if self.cfg.tanh_squash:
            a = action.clamp(-1 + 1e-6, 1 - 1e-6)
            u = torch.atanh(a)
            jacobian = torch.log1p(-a.pow(2)).sum(-1)
        else:
            u, jacobian = action, 0.0
        return -0.5 * (u - mu).pow(2).sum(-1) - 0.5 * mu.shape[-1] * math.log(2 * math.pi) - jacobian

    # ---- zero-shot inference and the one-step policy -------------------------------------------
    @torch.no_grad()
    def infer_task_vector(self, batch: TransitionBatch, reward: torch.Tensor) -> torch.Tensor:
        """z_r = E[softmax(T r) r B(s, a)] (not projected; the policy is invariant to its norm)."""
        goals = self.observations.in_chunks(lambda obs, action: self.B(self.observations(obs), action),
                                            batch.obs,
                                            batch.action, dtype=self.dtype, device=self.device)
        weight = None if batch.weight is None else batch.weight.to(self.device, torch.float64)
        return losses.infer_task_vector(goals, *self.inputs(reward), weight,
                                        self.cfg.reward_temperature).cpu()

    @torch.no_grad()
    def predict_q(self, obs, action, z) -> torch.Tensor:
        """Q^beta_r(s, a) = F(s, a)^T z_r / (1 - gamma) (normalised successor measure)."""
        obs, action, z = self.inputs(obs, action, z)
        q = torch.einsum("end,d->en", self.F(self.observations(obs), action), z)
        return (aggregate_heads(q, self.cfg.q_agg) / (1.0 - self.gamma)).cpu()

    @torch.no_grad()
    def predict_successor_ratio(self, obs, action, goal_obs, goal_action, z=None) -> torch.Tensor:
        obs, action, goal_obs, goal_action = self.inputs(obs, action, goal_obs, goal_action)
        F = aggregate_heads(self.F(self.observations(obs), action), "mean")
        return (F @ self.B(self.observations(goal_obs), goal_action).T).cpu()

    @torch.no_grad()
    def act(self, obs, z) -> torch.Tensor:
        """Discrete: argmax_a Q^beta_z(s, a), the one-step policy improvement.  Continuous: the actor's mode,
        clipped to [-1, 1] (evaluation temperature 0), with z projected to the sqrt(d) sphere."""
        obs, z = self.inputs(obs, z)
        if self.actor is None:
            all_obs, all_act = all_actions_for(obs, self.n_actions)
            return self.predict_q(all_obs, all_act, z).reshape(-1, self.n_actions).argmax(1)
        z_hat = losses.project_to_sphere(z)[None].expand(obs.shape[0], -1)
        return self.actor(self.observations(obs), z_hat).clamp(-1.0, 1.0).cpu()


def run(task: Any, cfg: Config, run: Any) -> None:
    """Adapter entry point: train on the task's reward-free data, evaluate zero-shot, write results."""
    torch.manual_seed(run.seed)
    gamma = task.gamma if cfg.discount is None else cfg.discount
    agent = OneStepFB(cfg, task.obs_dim, task.action_dim, task.n_actions if task.discrete_actions else 0, gamma)
    train_and_evaluate(agent, task, cfg, run)
