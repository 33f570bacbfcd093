"""A no-signal control for DDPO (this benchmark's, not from either paper).

DDPO's loop exactly (ddpo.py, the same Config and budget), except that each epoch's advantages are
randomly permuted across the epoch's trajectories before training.  The policy then moves about as far
as DDPO's (the same advantage magnitudes, optimiser, PPO clipping and reward queries) but in directions
the reward did not choose.  So:

  control - base   what that much undirected movement does to the base model;
  DDPO - control   what the reward's signal bought, at an equal amount of movement.

At small budgets the first is not zero: a random step away from a well-fitted model tends to lower its
reward, which can hide a real signal in DDPO - base.
"""
from __future__ import annotations

from algorithms.diffusion import ddpo
from algorithms.diffusion.ddpo import Config

__all__ = ["Config", "run"]


def run(task, cfg: Config, run) -> None:
    ddpo.run(task, cfg, run, shuffle_advantages=True)
