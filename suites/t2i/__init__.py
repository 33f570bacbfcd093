"""Text-to-image RL fine-tuning suite (DDPO, B²-DiffuRL): prompt sets, reward models, the embedded
shapes world, base-model loading.

Import-light (numpy at most at import time, per DESIGN.md): the parts live in subpackages imported
on demand -
  suites.t2i.shapes        the embedded "shapes" world: renderer, prompt grammar, exact pixel judge
  suites.t2i.prompt_sets   versioned prompt-set files (suites/t2i/prompts/) and `load_prompt_set`

Tasks are registered here once the diffusion model and reward models exist (not yet).
"""
