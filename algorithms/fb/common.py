"""Plumbing shared by the FB-family algorithm files: target networks, head aggregation, greedy
discrete actions, and the train -> evaluate -> checkpoint loop.  The losses live in `losses.py`; what
each algorithm computes is in its own file."""
from __future__ import annotations

import copy
import math
from typing import Any

import torch
from torch import nn

from suites.errors import UserError
from suites.zeroshot import TransitionBatch

DTYPES = {"float32": torch.float32, "float64": torch.float64}


def resolve_dtype(name: str) -> torch.dtype:
    return DTYPES[name]


class CheckpointedAgent(nn.Module):
    """Base of the FB-family agents: `state_dict` also carries every optimiser the agent holds (its
    attributes that are torch optimisers), so a checkpoint resumes training exactly.

    Devices: an agent lives where its parameters are (`agent.to("cuda")` before its optimisers take
    state).  Its public methods (`infer_task_vector`, `predict_q`, `predict_successor_ratio`, `act`)
    take tensors anywhere and return them on the CPU, so tasks never see the device."""

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def inputs(self, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Tensors cast to the agent's dtype on the agent's device."""
        return tuple(t.to(self.device, self.dtype) for t in tensors)

    def _optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {k: v for k, v in vars(self).items() if isinstance(v, torch.optim.Optimizer)}

    def state_dict(self, *args, **kwargs) -> dict[str, Any]:
        return {"nets": super().state_dict(*args, **kwargs),
                **{name: opt.state_dict() for name, opt in self._optimizers().items()}}

    def load_state_dict(self, state: dict[str, Any], strict: bool = True):
        super().load_state_dict(state["nets"], strict=strict)
        for name, opt in self._optimizers().items():
            opt.load_state_dict(state[name])


def adam(params, lr: float) -> torch.optim.Adam:
    """Adam (both references' optimiser, default betas and eps) on PyTorch's fused kernel: one pass over
    every tensor instead of about ten small kernels per tensor, a few percent of a cpu-size update.  The
    update is the for-loop Adam's up to fp32 rounding (about 3e-8 per step; bitwise equal in float64)."""
    return torch.optim.Adam(params, lr=lr, fused=True)


def frozen_copy(module: nn.Module) -> nn.Module:
    """A target network: a copy that receives no gradients."""
    target = copy.deepcopy(module)
    for p in target.parameters():
        p.requires_grad_(False)
    return target


def call_frozen(module: nn.Module, *args: Any) -> Any:
    """module(*args) with its parameters held fixed: gradients flow to the inputs (e.g. an actor's action)
    but no weight gradients are computed for `module` (an actor loss through F trains only the actor)."""
    frozen = {name: p.detach() for name, p in module.named_parameters()}
    return torch.func.functional_call(module, frozen, args)


@torch.no_grad()
def polyak_update(target: nn.Module, online: nn.Module, tau: float) -> None:
    """target <- (1 - tau) target + tau online (one foreach kernel; bitwise equal to a per-tensor lerp_)."""
    torch._foreach_lerp_(list(target.parameters()), list(online.parameters()), tau)


def aggregate_heads(values: torch.Tensor, how: str, dim: int = 0) -> torch.Tensor:
    """Combine ensemble heads: 'mean' or 'min' (the pessimistic choice of controllable_agent)."""
    if how == "mean":
        return values.mean(dim)
    if how == "min":
        return values.min(dim).values
    raise ValueError(f"aggregation must be 'mean' or 'min', not {how!r}")


def batch_to(batch: TransitionBatch, dtype: torch.dtype, device: torch.device | str = "cpu") -> TransitionBatch:
    def cast(t):
        return None if t is None else t.to(device, dtype)
    return TransitionBatch(cast(batch.obs), cast(batch.action), cast(batch.next_obs), cast(batch.next_action),
                           None if batch.weight is None else batch.weight.to(device, torch.float64))


def all_actions_for(obs: torch.Tensor, n_actions: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Repeat each row for every discrete action: obs [N*A, o] and one-hot actions [N*A, A]."""
    eye = torch.eye(n_actions, dtype=obs.dtype, device=obs.device)
    return obs.repeat_interleave(n_actions, 0), eye.repeat(obs.shape[0], 1)


def check_choices(cfg: Any, **choices: tuple) -> None:
    """Config fields restricted to a set of values: a bad one is a one-line `UserError`."""
    for name, allowed in choices.items():
        value = getattr(cfg, name)
        if value not in allowed:
            raise UserError(f"{type(cfg).__module__}.Config: {name}={value!r} is not one of "
                            f"{', '.join(map(repr, allowed))}")


def check_positive(cfg: Any, *names: str) -> None:
    for name in names:
        if getattr(cfg, name) <= 0:
            raise UserError(f"{type(cfg).__module__}.Config: {name} must be positive, got {getattr(cfg, name)!r}")


LR_SCHEDULES = ("constant", "cosine")


def learning_rate(base_lr: float, schedule: str, step: int, num_steps: int) -> float:
    """lr at a (1-based) step: constant (the references), or cosine decay from base_lr to 0."""
    if schedule == "constant":
        return base_lr
    return 0.5 * base_lr * (1.0 + math.cos(math.pi * (step - 1) / num_steps))


def train_and_evaluate(agent: Any, task: Any, cfg: Any, run: Any) -> None:
    """Offline training with periodic zero-shot evaluation, resumable from the run's checkpoint.

    The final checkpoint is the one evaluated and reported (not the best one; fb.md §2.1, [CA] #5).
    """
    agent.to(run.device)  # before any optimiser state exists (Adam's state is created on the first step)
    generator = torch.Generator().manual_seed(run.seed)
    start = 0
    state = run.load_checkpoint()
    if state is not None:
        agent.load_state_dict(state["agent"])
        generator.set_state(state["generator"])
        start = int(state["step"])
    elif cfg.eval_at_start:
        run.log(0, task.evaluate(agent).metrics, split="eval")
    result = None
    for step in run.progress(range(start + 1, cfg.num_steps + 1), total=cfg.num_steps, initial=start):
        for group in agent.optimizer.param_groups:
            group["lr"] = learning_rate(cfg.lr, cfg.lr_schedule, step, cfg.num_steps)
        batch = task.sample(cfg.batch_size, generator)
        with torch.autocast(agent.device.type, dtype=torch.bfloat16, enabled=cfg.bf16):
            logs = agent.update(batch, generator)
        if step % cfg.log_every == 0:
            run.log(step, {k: float(v) for k, v in logs.items()}, split="train")
        if step % cfg.eval_every == 0 or step == cfg.num_steps:
            result = task.evaluate(agent)
            run.log(step, result.metrics, split="eval")
        if step % cfg.checkpoint_every == 0 and step < cfg.num_steps:
            run.save_checkpoint({"agent": agent.state_dict(), "generator": generator.get_state(), "step": step},
                                step)
    if result is None:  # resumed after the last step: evaluate the final model once more
        result = task.evaluate(agent)
    run.add_samples(result.samples, step=cfg.num_steps)

