"""Text-to-image RL fine-tuning suite (DDPO, B²-DiffuRL): prompt sets, reward models, the embedded
shapes world, base-model loading.

Import-light (no torch at import time, per DESIGN.md): the parts live in modules imported on demand -
  suites.t2i.shapes         the embedded "shapes" world: renderer, prompt grammar, exact pixel judge
  suites.t2i.prompt_sets    versioned prompt-set files (suites/t2i/prompts/) and `load_prompt_set`
  suites.t2i.model          `T2IModel`, the one interface between a model and the diffusion-RL core
  suites.t2i.text_encoder   the frozen MiniLM prompt encoder of the shapes model
  suites.t2i.shapes_model   the embedded base model (committed weights; `make pretrain` rebuilds them)
  suites.t2i.pretrain       its pretraining script (deliberately biased captions)
  suites.t2i.rewards        reward models (clipscore, jpeg, oracle) and diversity metrics
  suites.t2i.train_clip     the embedded CLIP-style reward model's training script
  suites.t2i.sd             Stable Diffusion from a local folder (the `paper` size)
  suites.t2i.task           the registry entry point, `T2ITask` (training prompts, reward, evaluation)

Tasks: one per prompt set; a trial fine-tunes on the set's train split and evaluates train and test.
  t2i/shapes-composition-v0  t2i/shapes-attribute-v0  t2i/shapes-spatial-v0  t2i/shapes-counting-v0
      the embedded shapes world (model `shapes`, reward: the embedded clipscore)
  t2i/sd-template1-v0  t2i/sd-template2-v0  t2i/sd-template3-v0
      B²-DiffuRL's own prompt templates on Stable Diffusion (`paper` size; needs `model_dir` and a
      ViT-H-14 `reward_checkpoint`)
"""
from suites.registry import TaskSpec, register

ENTRY = "suites.t2i.task:make_task"
# Every kwarg of the entry point with its default, so a grid may override any of them.
DEFAULTS = {"model": "shapes", "model_dir": None, "reward": "clipscore", "reward_checkpoint": None,
            "reward_arch": None, "eval_images_per_prompt": 8, "eval_max_prompts": None, "eval_seed": 1234,
            "eval_batch_size": 32, "prompt_dir": None}
SHAPES_SETS = {
    "composition": "B²-DiffuRL template 1 in the shapes world: seen colours and shapes, unseen pairs",
    "attribute": "template 2: colour binding; natural training colours, unusual test colours",
    "spatial": "template 3: left/right/above/below between two objects",
    "counting": "two/three objects of a kind; unseen count per kind in test",
}
for _name, _description in SHAPES_SETS.items():
    register(TaskSpec(f"t2i/shapes-{_name}-v0", ENTRY, {**DEFAULTS, "prompt_set": f"shapes-v0/{_name}"},
                      frozenset({"shapes", "tiny", "cpu", _name}), _description))
for _n, _description in ((1, "animal + activity (seen parts, unseen pairs)"), (2, "colour + object binding"),
                         (3, "spatial relation between two objects")):
    register(TaskSpec(f"t2i/sd-template{_n}-v0", ENTRY,
                      {**DEFAULTS, "model": "sd", "reward_arch": "ViT-H-14", "prompt_set": f"b2diffurl/template{_n}"},
                      frozenset({"sd", "paper"}), f"B²-DiffuRL template {_n} on Stable Diffusion: {_description}"))
