"""Diffusion-RL family: the shared math in `core.py` (DDIM step with log-prob, trajectory sampling with
and without branches, PPO-clip, per-prompt statistics, LoRA, budget counting), used by one file per
algorithm (ddpo.py, b2diffurl.py).  The core sees a model only through `suites.t2i.model.T2IModel`."""
