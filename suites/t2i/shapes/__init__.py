"""The embedded "shapes" world: a text-to-image prompt-alignment problem small enough for a CPU.

A prompt asks for coloured shapes, their count and their spatial relation ("two blue squares",
"a red circle to the left of a green triangle"); an image is a small RGB picture (32x32 by
default) of flat shapes on black.  What keeps the real problem real: a compositional vocabulary
with held-out combinations and colours, a reward that is terminal and exact (a judge that reads
pixels only, graded or binary), and generator outputs that are not crisp (the judge is checked on
blurred, noisy images).

  render.py   scenes (objects with shape, colour, size, position) -> images, vectorised
  prompts.py  the prompt grammar (`Prompt`, `parse_prompt`, `format_prompt`) and `scene_for`
  oracle.py   the exact judge: `judge(images, prompts)` -> per-part results and scores (imports scipy)
  make_prompt_sets.py  writes the versioned train/test prompt files under suites/t2i/prompts/
"""
