"""URLB's RND explorer (fb.md §7.1), the agent behind ExORL's RND datasets, in torch.

Reference: rll-research/url_benchmark `agent/rnd.py`, `agent/ddpg.py`, `utils.py` (RMS, TruncatedNormal,
weight_init), `replay_buffer.py`, `pretrain.py`, `agent/rnd.yaml`; facebookresearch/controllable_agent's
`url_benchmark/agent` holds the same code.  States only (no pixels, no encoder).

Acting (`RNDExplorer.step`, one call per env step, in pretrain.py's order: act, then update, then the
env steps): uniform actions in [-1, 1] for the first `num_seed_frames` steps; then the actor's mean plus
N(0, 0.2) noise, clamped to [-1 + 1e-6, 1 - 1e-6] (TruncatedNormal.sample without clip).

One update (RNDAgent.update; every `update_every_steps` env steps once `num_seed_frames` steps were taken):
  1. batch from the replay of completed episodes (ReplayBuffer._sample): an episode uniformly, then
     idx uniformly in [1, T-n+1]; s = observation[idx-1], a = action[idx], s_n = observation[idx+n-1];
     the bootstrap discount is gamma^n (DMC discounts are all 1).
  2. RND (update_rnd): e(s) = mean_k (target(x) - predictor(x))_k^2 with x = clip(BatchNorm1d(s), -5, 5),
     BatchNorm without affine parameters; one Adam step on mean e over the batch (the target is frozen).
  3. intrinsic reward (compute_intr_reward): e(s) recomputed after that step, then
     r = rnd_scale * e(s) / (sqrt(S) + 1e-8), S the running variance of e over all batches so far
     (utils.RMS: M=0, S=1, n=1e-4 initially, then the parallel mean/variance update per batch).
  4. critic (DDPG.update_critic): y = r + gamma^n * min(Q1', Q2')(s_n, a'), a' = actor(s_n) + noise
     (std 0.2, clipped at 0.3); loss MSE(Q1, y) + MSE(Q2, y); Q' is the Polyak-averaged critic.
  5. actor (update_actor): minimise -min(Q1, Q2)(s, actor(s) + clipped noise) (the clamp to [-1, 1] passes
     gradients straight through, as TruncatedNormal._clamp does).
  6. critic target: Polyak average with tau 0.01.
Networks (ddpg.py, states): critic trunk [Lin(obs+act, h), LayerNorm, tanh], two heads [Lin(h, h), ReLU,
Lin(h, 1)]; actor [Lin(obs, h), LayerNorm, tanh, Lin(h, h), ReLU, Lin(h, act), tanh]; RND predictor and
target obs -> h -> h -> rep with ReLUs.  Linear weights orthogonal, biases 0 (utils.weight_init).
Adam, lr 1e-4 for actor, critic and predictor.

Faithful quirks of the reference, kept on purpose:
  - the reward of an n-step sample is the intrinsic reward of its first state alone (URLB replaces the
    n-step reward sum with intr(s)), while the bootstrap uses s_n and gamma^n;
  - the RND module stays in training mode, so BatchNorm normalises each batch by its own mean and
    variance; its running statistics are updated but never used;
  - only completed episodes are in the replay (URLB stores an episode when it ends); FIFO of
    `replay_buffer_size` transitions, in whole episodes.

Sizes (`SIZES`): "paper" is URLB's setting (hidden 1024, rep 512, batch 1024, update every 2 steps, 4000
seed frames, 1M replay); "cpu" the scaled one of fb.md §7.3 (hidden 256, rep 128, batch 256, update every
4 steps; the rest as paper); "tiny" for smoke tests.

Deviations (see also suites.dmc.collect):
  - each collection worker runs its own RNDExplorer on its own episodes (own networks, replay and seed
    frames) where URLB runs one agent on one stream of episodes;
  - a completed episode enters the replay at once; URLB's DataLoader workers pick new episode files up
    every 1000 samples, i.e. a few updates late;
  - an update that falls due while the replay is still empty (only possible with num_seed_frames shorter
    than an episode) is skipped;
  - all randomness comes from one torch.Generator and one numpy Generator per explorer (seeded by the
    caller), so an explorer's state (`state_dict`) plus its episodes reproduce it exactly.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from suites.errors import UserError
from suites.registry import did_you_mean

__all__ = ["RNDConfig", "SIZES", "resolve_config", "RNDExplorer", "EpisodeReplay"]


@dataclasses.dataclass(frozen=True)
class RNDConfig:
    """URLB `agent/rnd.yaml` + `pretrain.yaml` (states); field names follow them."""

    size: str = "paper"              # the preset these values started from (informational)
    hidden_dim: int = 1024           # actor, critic and RND hidden width
    rnd_rep_dim: int = 512           # RND output width
    batch_size: int = 1024
    update_every_steps: int = 2      # one update every this many env steps
    lr: float = 1e-4                 # Adam, actor + critic + RND predictor
    critic_target_tau: float = 0.01
    nstep: int = 3
    discount: float = 0.99
    num_seed_frames: int = 4000      # uniform random actions and no updates before this many env steps
    stddev: float = 0.2              # exploration / target-policy noise (stddev_schedule: constant)
    stddev_clip: float = 0.3
    rnd_scale: float = 1.0
    rnd_clip: float = 5.0            # clip of the normalised RND input
    replay_buffer_size: int = 1_000_000  # transitions (FIFO in whole episodes)
    device: str = "cpu"              # "cuda" for the paper size on a GPU machine

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


SIZES: dict[str, RNDConfig] = {
    "paper": RNDConfig(),
    "cpu": RNDConfig(size="cpu", hidden_dim=256, rnd_rep_dim=128, batch_size=256, update_every_steps=4),
    "tiny": RNDConfig(size="tiny", hidden_dim=32, rnd_rep_dim=16, batch_size=32, update_every_steps=4,
                      num_seed_frames=1000, replay_buffer_size=100_000),
}
_POSITIVE_INTS = ("hidden_dim", "rnd_rep_dim", "batch_size", "update_every_steps", "nstep", "replay_buffer_size")


def resolve_config(spec: Any = None) -> RNDConfig:
    """An RNDConfig from None (the "cpu" size), a size name, an RNDConfig, or a dict of field overrides on a
    size (`{"size": "tiny", "num_seed_frames": 100}`; the size defaults to "cpu")."""
    if spec is None:
        return SIZES["cpu"]
    if isinstance(spec, RNDConfig):
        config = spec
    elif isinstance(spec, str):
        if spec not in SIZES:
            raise UserError(f"unknown RND size {spec!r}.{did_you_mean(spec, SIZES)} Sizes are {', '.join(SIZES)}.")
        config = SIZES[spec]
    elif isinstance(spec, dict):
        fields = {f.name: f for f in dataclasses.fields(RNDConfig)}
        unknown = [k for k in spec if k not in fields]
        if unknown:
            raise UserError(f"unknown RND config key {unknown[0]!r}.{did_you_mean(unknown[0], fields)} "
                            f"Keys are {', '.join(fields)}.")
        config = dataclasses.replace(resolve_config(spec.get("size", "cpu")), **spec)
    else:
        raise UserError(f"RND config must be a size name, a dict or an RNDConfig, got {type(spec).__name__}")
    for name in _POSITIVE_INTS + ("num_seed_frames",):
        value = getattr(config, name)
        if not isinstance(value, int) or isinstance(value, bool) or value < (0 if name == "num_seed_frames" else 1):
            kind = "non-negative" if name == "num_seed_frames" else "positive"
            raise UserError(f"RND config {name} must be a {kind} integer, got {value!r}")
    for name in ("lr", "critic_target_tau", "discount", "stddev", "stddev_clip", "rnd_scale", "rnd_clip"):
        value = getattr(config, name)
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) or value < 0:
            raise UserError(f"RND config {name} must be a non-negative number, got {value!r}")
    if config.device != "cpu" and not (config.device.startswith("cuda") and torch.cuda.is_available()):
        raise UserError(f"RND device {config.device!r} is not available here: use device 'cpu'")
    return config


# ---- networks (url_benchmark agent/ddpg.py and agent/rnd.py, states) -------------------------------
def _init_linear(module: nn.Module, generator: torch.Generator) -> None:
    """utils.weight_init: orthogonal Linear weights, zero biases (LayerNorm keeps its 1/0 defaults)."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.orthogonal_(m.weight, generator=generator)
            nn.init.zeros_(m.bias)


class Actor(nn.Module):
    def __init__(self, obs_dim: int, action_dim: int, hidden_dim: int):
        super().__init__()
        self.trunk = nn.Sequential(nn.Linear(obs_dim, hidden_dim), nn.LayerNorm(hidden_dim), nn.Tanh())
        self.policy = nn.Sequential(nn.Linear(hidden_dim, hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, action_dim))

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        """The mean action (tanh)."""
        return torch.tanh(self.policy(self.trunk(obs)))


class Critic(nn.Module):
    def __init__(self, obs_dim: int, action_dim: int, hidden_dim: int):
        super().__init__()
        self.trunk = nn.Sequential(nn.Linear(obs_dim + action_dim, hidden_dim), nn.LayerNorm(hidden_dim), nn.Tanh())
        self.Q1 = nn.Sequential(nn.Linear(hidden_dim, hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, 1))
        self.Q2 = nn.Sequential(nn.Linear(hidden_dim, hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, 1))

    def forward(self, obs: torch.Tensor, action: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.trunk(torch.cat([obs, action], dim=-1))
        return self.Q1(h), self.Q2(h)


class RND(nn.Module):
    def __init__(self, obs_dim: int, hidden_dim: int, rep_dim: int, clip: float):
        super().__init__()
        self.clip = clip
        self.normalize_obs = nn.BatchNorm1d(obs_dim, affine=False)

        def mlp():
            return nn.Sequential(nn.Linear(obs_dim, hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, hidden_dim),
                                 nn.ReLU(), nn.Linear(hidden_dim, rep_dim))

        self.predictor, self.target = mlp(), mlp()
        for p in self.target.parameters():
            p.requires_grad_(False)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        """[B, 1] prediction error: mean squared difference between the frozen target's and the predictor's
        embeddings of the batch-normalised, clipped observation."""
        x = torch.clamp(self.normalize_obs(obs), -self.clip, self.clip)
        return torch.square(self.target(x).detach() - self.predictor(x)).mean(dim=-1, keepdim=True)


def sample_action(mean: torch.Tensor, std: float, clip: float | None, generator: torch.Generator) -> torch.Tensor:
    """utils.TruncatedNormal.sample: mean + N(0, std) noise (clipped to +-clip if given), clamped to
    [-1 + 1e-6, 1 - 1e-6] with the gradient passed straight through the clamp."""
    eps = torch.randn(mean.shape, generator=generator).to(mean.device) * std
    if clip is not None:
        eps = torch.clamp(eps, -clip, clip)
    x = mean + eps
    clamped = torch.clamp(x, -1.0 + 1e-6, 1.0 - 1e-6)
    return x - x.detach() + clamped.detach()


class RunningMeanVar:
    """utils.RMS: running mean M and variance S of a [B, 1] stream (parallel-update formula)."""

    def __init__(self, device: torch.device, epsilon: float = 1e-4):
        self.M = torch.zeros(1, device=device)
        self.S = torch.ones(1, device=device)
        self.n = epsilon

    def update(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        bs = x.size(0)
        delta = torch.mean(x, dim=0) - self.M
        new_M = self.M + delta * bs / (self.n + bs)
        new_S = (self.S * self.n + torch.var(x, dim=0) * bs + torch.square(delta) * self.n * bs / (self.n + bs)) \
            / (self.n + bs)
        self.M, self.S, self.n = new_M, new_S, self.n + bs
        return self.M, self.S


# ---- replay (url_benchmark replay_buffer.py, in memory) ---------------------------------------------
class EpisodeReplay:
    """Completed episodes of one length, FIFO by episode: episode k (counting from 0) lives in slot
    k % capacity.  Sampling is uniform over stored episodes, then uniform over a start index."""

    def __init__(self, capacity: int, length: int, obs_dim: int, action_dim: int):
        self.capacity, self.length = max(1, capacity), length
        self.count = 0  # episodes ever added
        self._obs = np.empty((0, length + 1, obs_dim), np.float32)
        self._action = np.empty((0, length + 1, action_dim), np.float32)

    @property
    def size(self) -> int:
        return min(self.count, self.capacity)

    def add(self, observation: np.ndarray, action: np.ndarray, position: int | None = None) -> None:
        """Store an episode (rows 0..T); `position` (default: the next) is its number k in the stream."""
        k = self.count if position is None else position
        slot = k % self.capacity
        if slot >= len(self._obs):
            rows = min(self.capacity, max(16, 2 * len(self._obs), slot + 1))
            grown_obs = np.empty((rows,) + self._obs.shape[1:], np.float32)
            grown_action = np.empty((rows,) + self._action.shape[1:], np.float32)
            grown_obs[:len(self._obs)], grown_action[:len(self._action)] = self._obs, self._action
            self._obs, self._action = grown_obs, grown_action
        self._obs[slot], self._action[slot] = observation, action
        self.count = max(self.count, k + 1)

    def sample(self, rng: np.random.Generator, batch_size: int, nstep: int):
        """(s, a, s_n): observation[idx-1], action[idx], observation[idx+n-1], idx uniform in [1, T-n+1]."""
        episode = rng.integers(0, self.size, batch_size)
        idx = rng.integers(0, self.length - nstep + 1, batch_size) + 1
        return self._obs[episode, idx - 1], self._action[episode, idx], self._obs[episode, idx + nstep - 1]


# ---- the explorer -----------------------------------------------------------------------------------
class RNDExplorer:
    """URLB's RNDAgent, reward-free, with its own replay; one instance per collection worker.

        explorer = RNDExplorer(obs_dim, action_dim, episode_length, config, np.random.SeedSequence(...))
        action = explorer.step(obs)                   # acts, then trains (URLB order); once per env step
        stats = explorer.end_episode(observation, action_rows)   # adds the episode to the replay
    """

    def __init__(self, obs_dim: int, action_dim: int, episode_length: int, config: RNDConfig,
                 seed: np.random.SeedSequence):
        if config.nstep > episode_length:
            raise UserError(f"RND nstep {config.nstep} is longer than the episodes ({episode_length} steps)")
        self.config, self.action_dim = config, action_dim
        self.device = torch.device(config.device)
        torch_seed, numpy_seed = seed.spawn(2)
        self.generator = torch.Generator().manual_seed(int(torch_seed.generate_state(1, np.uint64)[0]))
        self.rng = np.random.default_rng(numpy_seed)
        h = config.hidden_dim
        self.actor = Actor(obs_dim, action_dim, h)
        self.critic = Critic(obs_dim, action_dim, h)
        self.rnd = RND(obs_dim, h, config.rnd_rep_dim, config.rnd_clip)
        for net in (self.actor, self.critic, self.rnd):
            _init_linear(net, self.generator)
        self.critic_target = Critic(obs_dim, action_dim, h)
        self.critic_target.load_state_dict(self.critic.state_dict())
        for net in (self.actor, self.critic, self.critic_target, self.rnd):
            net.to(self.device).train()
        self.actor_opt = torch.optim.Adam(self.actor.parameters(), lr=config.lr)
        self.critic_opt = torch.optim.Adam(self.critic.parameters(), lr=config.lr)
        self.rnd_opt = torch.optim.Adam(self.rnd.predictor.parameters(), lr=config.lr)
        self.intrinsic_rms = RunningMeanVar(self.device)
        self.replay = EpisodeReplay(config.replay_buffer_size // episode_length, episode_length, obs_dim, action_dim)
        self.global_step = 0
        self._metrics: dict[str, list[float]] = {}

    # -- acting ---------------------------------------------------------------------------------------
    def step(self, obs: np.ndarray) -> np.ndarray:
        """The action for `obs` (float32 in [-1, 1]); then one update if one is due (pretrain.py order)."""
        c = self.config
        if self.global_step < c.num_seed_frames:
            action = torch.rand(self.action_dim, generator=self.generator) * 2.0 - 1.0
        else:
            with torch.no_grad():
                mean = self.actor(torch.as_tensor(obs, device=self.device).unsqueeze(0))
                action = sample_action(mean, c.stddev, None, self.generator)[0]
        action = action.cpu().numpy().astype(np.float32)
        if (self.global_step >= c.num_seed_frames and self.global_step % c.update_every_steps == 0
                and self.replay.size > 0):
            self.update()
        self.global_step += 1
        return action

    # -- learning -------------------------------------------------------------------------------------
    def update(self) -> None:
        c = self.config
        obs, action, next_obs = (torch.as_tensor(x, device=self.device)
                                 for x in self.replay.sample(self.rng, c.batch_size, c.nstep))
        # RND predictor step, then the intrinsic reward with the updated predictor (agent/rnd.py)
        rnd_loss = self.rnd(obs).mean()
        self.rnd_opt.zero_grad(set_to_none=True)
        rnd_loss.backward()
        self.rnd_opt.step()
        with torch.no_grad():
            prediction_error = self.rnd(obs)
            _, variance = self.intrinsic_rms.update(prediction_error)
            reward = c.rnd_scale * prediction_error / (torch.sqrt(variance) + 1e-8)
        discount = c.discount ** c.nstep
        # critic (agent/ddpg.py update_critic)
        with torch.no_grad():
            next_action = sample_action(self.actor(next_obs), c.stddev, c.stddev_clip, self.generator)
            target_q1, target_q2 = self.critic_target(next_obs, next_action)
            target_q = reward + discount * torch.min(target_q1, target_q2)
        q1, q2 = self.critic(obs, action)
        critic_loss = F.mse_loss(q1, target_q) + F.mse_loss(q2, target_q)
        self.critic_opt.zero_grad(set_to_none=True)
        critic_loss.backward()
        self.critic_opt.step()
        # actor (update_actor)
        policy_action = sample_action(self.actor(obs), c.stddev, c.stddev_clip, self.generator)
        actor_q1, actor_q2 = self.critic(obs, policy_action)
        actor_loss = -torch.min(actor_q1, actor_q2).mean()
        self.actor_opt.zero_grad(set_to_none=True)
        actor_loss.backward()
        self.actor_opt.step()
        # critic target (utils.soft_update_params)
        with torch.no_grad():
            for p, p_target in zip(self.critic.parameters(), self.critic_target.parameters()):
                p_target.mul_(1 - c.critic_target_tau).add_(c.critic_target_tau * p)
        for key, value in (("intrinsic_reward", reward.mean()), ("rnd_loss", rnd_loss), ("critic_loss", critic_loss),
                           ("actor_loss", actor_loss), ("critic_q", q1.mean())):
            self._metrics.setdefault(key, []).append(float(value.detach()))

    def end_episode(self, observation: np.ndarray, action: np.ndarray) -> dict[str, Any]:
        """Add a completed episode (rows 0..T) to the replay; the episode's training statistics."""
        self.replay.add(observation, action)
        stats: dict[str, Any] = {"global_step": self.global_step,
                                 "updates": len(self._metrics.get("rnd_loss", []))}
        for key in ("intrinsic_reward", "rnd_loss", "critic_loss", "actor_loss", "critic_q"):
            values = self._metrics.get(key)
            stats[key] = float(np.mean(values)) if values else None
        stats["prediction_error_mean"] = float(self.intrinsic_rms.M)
        stats["prediction_error_std"] = float(torch.sqrt(self.intrinsic_rms.S))
        self._metrics = {}
        return stats

    # -- checkpoints (the replay is rebuilt from the episode files) --------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"global_step": self.global_step, "replay_count": self.replay.count,
                "actor": self.actor.state_dict(), "critic": self.critic.state_dict(),
                "critic_target": self.critic_target.state_dict(), "rnd": self.rnd.state_dict(),
                "actor_opt": self.actor_opt.state_dict(), "critic_opt": self.critic_opt.state_dict(),
                "rnd_opt": self.rnd_opt.state_dict(),
                "rms": {"M": self.intrinsic_rms.M, "S": self.intrinsic_rms.S, "n": self.intrinsic_rms.n},
                "torch_rng": self.generator.get_state(), "numpy_rng": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.global_step = int(state["global_step"])
        for name in ("actor", "critic", "critic_target", "rnd", "actor_opt", "critic_opt", "rnd_opt"):
            getattr(self, name).load_state_dict(state[name])
        self.intrinsic_rms.M = state["rms"]["M"].to(self.device)
        self.intrinsic_rms.S = state["rms"]["S"].to(self.device)
        self.intrinsic_rms.n = float(state["rms"]["n"])
        self.generator.set_state(state["torch_rng"])
        self.rng.bit_generator.state = state["numpy_rng"]
        self._metrics = {}
