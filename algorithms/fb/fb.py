"""FB: forward-backward representations (Touati & Ollivier 2021; Touati, Rapin, Ollivier 2023), with
the semantics of controllable_agent's `fb_ddpg.py` (fb.md §2.1).  Touati convention (losses.py):
M^pi counts from the next state, B takes the next state s', positives have no (1 - gamma), ensemble
losses are summed.

F(s, a, z) is trained for every latent z at once to be the successor measure of pi_z, the policy
that is greedy for F(., z)^T z.  For discrete actions (the didactic suite) pi_z is that exact argmax
over actions, taken on the online F with the pessimistic min over heads: the discrete analogue of
controllable_agent's actor.  For continuous actions pi_z is that actor: a tanh policy with truncated-
normal noise (std 0.2, clip 0.3), trained after each FB step to maximise min(F1^T z, F2^T z).

Read top to bottom: Config -> FB (networks, latents, update = the FB loss, inference, policy) -> run().
"""
from __future__ import annotations

import dataclasses
from typing import Any

import torch

from algorithms.fb import losses
from algorithms.fb.encoders import EncoderConfig, Observations, check_encoder_config
from algorithms.fb.common import (DTYPES, LR_SCHEDULES, CheckpointedAgent, adam, aggregate_heads,
                                  all_actions_for, batch_to, call_frozen, check_choices, check_positive, frozen_copy,
                                  polyak_update, resolve_dtype, train_and_evaluate)
from algorithms.fb.networks import ARCHS, TwoStreamActor, build_map, map_inputs
from algorithms.registry import added_field
from suites.zeroshot import TransitionBatch


@dataclasses.dataclass(frozen=True)
class Config(EncoderConfig):
    """Defaults are controllable_agent's `fb_ddpg` config (fb.md §2.1); suites' YAML grids override them."""

    num_steps: int = 1_000_000
    """Gradient steps (`num_grad_steps`)."""
    batch_size: int = 1024
    """Transitions per step.  Ignored when the task hands out its whole weighted support (didactic 'exact')."""
    latents_per_step: int = 32
    """With a weighted support, each of this many latents sees the whole support (exact over data, Monte
    Carlo over z).  With i.i.d. minibatches each row gets its own latent, as in the reference."""
    lr: float = 1e-4
    """Adam learning rate for F and B together."""
    lr_schedule: str = "constant"
    """'constant' (the reference) or 'cosine' (decay to 0 over num_steps; removes Adam's noise floor)."""
    latent_dim: int = 50
    """d (`z_dim`)."""
    discount: float | None = None
    """gamma; None uses the task's (0.98 in Touati et al.'s DMC runs; the CMP's gamma in the didactic suite)."""
    tau: float = 0.01
    """Polyak rate of the target F and B (`fb_target_tau`)."""
    ortho_coef: float = 1.0
    """Weight of the orthonormality loss on B."""
    mix_ratio: float = 0.5
    """Share of training latents taken from projected B of batch goals."""
    normalize_backward: bool = True
    """Project B onto the sqrt(d)-sphere (`norm_z`)."""
    forward_heads: int = 2
    """F1, F2."""
    target_agg: str = "min"
    """How target heads combine in the TD target: 'min' (reference) or 'mean'."""
    q_agg: str = "min"
    """How heads combine in Q for the policy and for predictions."""
    arch: str = "two_stream"
    """'two_stream' (controllable_agent's F(s, a, z); B an mlp), 'mlp', or 'tabular' for one-hot inputs
    (didactic): tabular in (s, a), linear in z."""
    forward_hidden: tuple[int, ...] = (1024, 512)
    """F widths: (hidden, feature) for two_stream (`hidden_dim`, `feature_dim`); hidden widths for mlp."""
    backward_hidden: tuple[int, ...] = (256, 256)
    """Hidden widths of B (`backward_hidden_dim`; the code default 526 is commented "512", Meta Motivo's
    DMC example uses 256, fb.md §2.1)."""
    actor_lr: float = 1e-4
    """Adam learning rate of the actor (continuous actions only)."""
    actor_hidden: tuple[int, ...] = (1024, 512)
    """Actor widths (hidden, feature), two-stream like F."""
    actor_std: float = 0.2
    """Std of the actor's truncated-normal noise (`stddev_schedule`), for TD targets and the actor loss."""
    actor_std_clip: float = 0.3
    """The noise is clipped to +-this (`stddev_clip`)."""
    dtype: str = "float32"
    """'float32' or 'float64'."""
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
        check_choices(self, arch=ARCHS, dtype=tuple(DTYPES), lr_schedule=LR_SCHEDULES,
                      target_agg=("mean", "min"), q_agg=("mean", "min"))
        check_positive(self, "num_steps", "batch_size", "lr", "latent_dim", "forward_heads", "log_every",
                       "eval_every", "checkpoint_every")
        check_encoder_config(self)


class FB(CheckpointedAgent):
    goal_space = "state"
    represents = "optimal"

    def __init__(self, cfg: Config, obs_dim: int | tuple[int, int, int], action_dim: int, n_actions: int,
                 gamma: float):
        super().__init__()
        self.cfg, self.n_actions, self.gamma = cfg, n_actions, gamma
        self.dtype = resolve_dtype(cfg.dtype)
        d = cfg.latent_dim
        # Pixels (encoders.py): images [C, H, W] become features; the maps below are built on features.
        self.observations = Observations(cfg, obs_dim)
        obs_dim, wrap = self.observations.feature_dim, self.observations.wrap_map
        self.forward_net = wrap(build_map(cfg.arch, obs_dim, action_dim, d, uses_action=True, z_dim=d,
                                          heads=cfg.forward_heads, hidden=cfg.forward_hidden))  # F_e(s, a, z)
        self.backward_net = wrap(build_map(cfg.arch, obs_dim, 0, d, uses_action=False,
                                           hidden=cfg.backward_hidden))                        # B(s')
        # Continuous actions: the actor pi(s, z).  Built after F and B so discrete runs draw the same init.
        self.actor = self.observations.wrap_actor(
            None if n_actions else
            TwoStreamActor(obs_dim, d, action_dim, cfg.actor_hidden[0], cfg.actor_hidden[-1]))
        self.to(self.dtype)
        self.target_forward, self.target_backward = frozen_copy(self.forward_net), frozen_copy(self.backward_net)
        self.optimizer = adam([*self.forward_net.parameters(), *self.backward_net.parameters(),
                               *self.observations.parameters()], lr=cfg.lr)
        self.actor_optimizer = (adam(self.actor.parameters(), lr=cfg.actor_lr)
                                if self.actor is not None else None)

    # ---- maps ---------------------------------------------------------------------------------
    def F(self, obs, action, z, net=None):
        return (net or self.forward_net)(map_inputs(self.cfg.arch, obs, action), z)         # [E, N, d]

    def B(self, next_obs, net=None):
        out = (net or self.backward_net)(map_inputs(self.cfg.arch, next_obs, None))[0]      # [N, d]
        return losses.project_to_sphere(out) if self.cfg.normalize_backward else out

    def greedy_action(self, obs, z):
        """pi_z(s) = argmax_a min_e F_e(s, a, z)^T z, one-hot [N, A]; z is [N, d]."""
        all_obs, all_act = all_actions_for(obs, self.n_actions)
        z_rep = z.repeat_interleave(self.n_actions, 0)
        q = aggregate_heads(torch.einsum("end,nd->en", self.F(all_obs, all_act, z_rep), z_rep), self.cfg.q_agg)
        best = q.reshape(-1, self.n_actions).argmax(1)
        return torch.nn.functional.one_hot(best, self.n_actions).to(obs.dtype)

    def actor_sample(self, obs, z, generator):
        """a = clip(tanh(mu(s, z)) + clip(eps, -c, c), -1, 1), eps ~ N(0, std^2); the gradient flows through
        the clip to the bounds (controllable_agent's TruncatedNormal.sample)."""
        mean = self.actor(obs, z)
        noise = torch.randn(mean.shape, generator=generator, dtype=mean.dtype).to(mean.device) * self.cfg.actor_std
        action = mean + noise.clamp(-self.cfg.actor_std_clip, self.cfg.actor_std_clip)
        bounded = action.clamp(-1.0 + 1e-6, 1.0 - 1e-6)
        return action - action.detach() + bounded.detach()

    def policy_action(self, obs, z, generator):
        """Next actions for the TD target: exact greedy (discrete) or the noisy actor (continuous)."""
        return self.greedy_action(obs, z) if self.actor is None else self.actor_sample(obs, z, generator)

    # ---- one gradient step: the FB loss --------------------------------------------------------
    def update(self, batch: TransitionBatch, generator: torch.Generator) -> dict[str, torch.Tensor]:
        b = self.observations.train_batch(batch_to(batch, self.dtype, self.device),
                                          generator)  # pixels: shift, encode
        cfg, n, d = self.cfg, len(b), self.cfg.latent_dim
        B = self.B(b.next_obs)          # goals: the rows' next states; detached, it also seeds the latents
        goal_B = B.detach()
        # Latents: one per row (i.i.d. minibatch, as the reference), or K latents that each see the
        # whole weighted support.  Shape [K, N, d].
        k = 1 if b.weight is None else cfg.latents_per_step
        z = losses.sample_latents(n if b.weight is None else k, d, generator, cfg.mix_ratio, goal_B, b.weight,
                                  self.dtype)
        z = z[None] if b.weight is None else z[:, None, :].expand(k, n, d)
        obs, act, nxt = (t.repeat(k, *[1] * (t.dim() - 1)) for t in (b.obs, b.action, b.next_obs))
        zf = z.reshape(k * n, d)
        with torch.no_grad():  # target: min_e F_bar_e(s', pi_z(s'), z)^T B_bar(g_j)
            next_act = self.policy_action(nxt, zf, generator)
            target_F = self.F(nxt, next_act, zf, self.target_forward).reshape(-1, k, n, d)
            target_M = aggregate_heads(torch.einsum("eknd,md->eknm", target_F,
                                                    self.B(b.next_obs, self.target_backward)), cfg.target_agg)
        F = self.F(obs, act, zf).reshape(-1, k, n, d)
        M = torch.einsum("eknd,md->kenm", F, B)                      # [K, E, N, N]
        fb_loss, parts = losses.successor_loss(M, target_M, self.gamma, "touati", b.weight)
        ortho = losses.orthonormality_loss(B, "touati", b.weight)
        loss = fb_loss + cfg.ortho_coef * ortho
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        logs = {"loss": loss.detach(), "fb_offdiag": parts["offdiag"], "fb_diag": parts["diag"],
                "orthonormality": ortho.detach()}
        if self.actor is not None:  # actor step on the updated F: maximise min_e F_e(s, pi(s, z), z)^T z
            # F is held fixed (no weight gradients for it: they would be discarded by the next zero_grad);
            # a shared pixel encoder too (the actor reads its features detached, as in DrQ-v2)
            obs = obs.detach()
            action = self.actor_sample(obs, zf, generator)
            F_pi = call_frozen(self.forward_net, map_inputs(cfg.arch, obs, action), zf)
            q = aggregate_heads(torch.einsum("end,nd->en", F_pi, zf), cfg.q_agg)
            actor_loss = -q.mean()
            self.actor_optimizer.zero_grad(set_to_none=True)
            actor_loss.backward()
            self.actor_optimizer.step()
            logs["actor_loss"] = actor_loss.detach()
        polyak_update(self.target_forward, self.forward_net, cfg.tau)
        polyak_update(self.target_backward, self.backward_net, cfg.tau)
        return logs

    # ---- zero-shot inference and the policy ----------------------------------------------------
    @torch.no_grad()
    def infer_task_vector(self, batch: TransitionBatch, reward: torch.Tensor) -> torch.Tensor:
        """z_r = E[r(s') B(s')] (not projected: its norm carries the scale of Q)."""
        goals = self.observations.in_chunks(lambda nxt: self.B(self.observations(nxt)), batch.next_obs,
                                            dtype=self.dtype, device=self.device)
        weight = None if batch.weight is None else batch.weight.to(self.device, torch.float64)
        return losses.infer_task_vector(goals, *self.inputs(reward), weight, 0.0).cpu()

    def _policy_latent(self, z, n):
        return losses.project_to_sphere(*self.inputs(z))[None].expand(n, -1)

    @torch.no_grad()
    def predict_q(self, obs, action, z) -> torch.Tensor:
        """Q_r(s, a) = F(s, a, z_hat)^T z_r with z_hat the projected latent the policy is conditioned on."""
        obs, action, z_r = self.inputs(obs, action, z)
        obs = self.observations(obs)
        q = torch.einsum("end,d->en", self.F(obs, action, self._policy_latent(z, obs.shape[0])), z_r)
        return aggregate_heads(q, self.cfg.q_agg).cpu()

    @torch.no_grad()
    def predict_successor_ratio(self, obs, action, goal_obs, goal_action, z) -> torch.Tensor:
        obs, action, goal_obs = self.inputs(obs, action, goal_obs)
        obs, goal_obs = self.observations(obs), self.observations(goal_obs)
        F = aggregate_heads(self.F(obs, action, self._policy_latent(z, obs.shape[0])), "mean")
        return (F @ self.B(goal_obs).T).cpu()

    @torch.no_grad()
    def act(self, obs, z) -> torch.Tensor:
        """The evaluation action: the greedy action index (discrete) or the actor's mean tanh(mu) (continuous)."""
        obs = self.observations(*self.inputs(obs))
        z_hat = self._policy_latent(z, obs.shape[0])
        return (self.greedy_action(obs, z_hat).argmax(1) if self.actor is None else self.actor(obs, z_hat)).cpu()


def run(task: Any, cfg: Config, run: Any) -> None:
    """Adapter entry point: train on the task's reward-free data, evaluate zero-shot, write results."""
    torch.manual_seed(run.seed)
    gamma = task.gamma if cfg.discount is None else cfg.discount
    agent = FB(cfg, task.obs_dim, task.action_dim, task.n_actions if task.discrete_actions else 0, gamma)
    train_and_evaluate(agent, task, cfg, run)
