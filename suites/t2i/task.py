"""The t2i suite's benchmark tasks: fine-tune a text-to-image model on one prompt set's train split.

A task bundles what the algorithm trains against and how the result is judged:
  model        the base model (`shapes`: the embedded pixel-space model, suites/t2i/shapes_model.py;
               `sd`: a local diffusers Stable Diffusion folder, suites/t2i/sd.py)
  prompts      a versioned prompt set (suites/t2i/prompts/): train split for fine-tuning, train and
               test splits for evaluation.  Your own prompts: a directory laid out the same way
               (`<group>/<set>_train.txt` and `<set>_test.txt`, one prompt per line, or JSON lists),
               e.g. `--set task.prompt_dir=my_prompts --set task.prompt_set=mine/animals`
  reward       the training reward (suites/t2i/rewards.py): `clipscore` by default, as B²-DiffuRL
  evaluation   `evaluate(generate, step)`: for every prompt of each split, `eval_images_per_prompt`
               images from a fixed noise stream (seeded by `eval_seed` and the run's seed, so the base
               model and the fine-tuned one are judged on the same noise: paired samples); one row per
               (split, prompt, image) with clipscore, and in the shapes world the exact oracle's graded
               and binary scores; per-prompt diversity (mean pairwise cosine distance of the reward
               model's image embeddings, and a pixel-space distance) on every row of that prompt.
               Metrics: `<split>/<metric>` means over images (equal images per prompt, so also over
               prompts).  The algorithm calls it before training (the base model) and at the end.

The algorithm never sees how evaluation is done, and the task never sees losses.
"""
from __future__ import annotations

import dataclasses
import hashlib
import io
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from suites.errors import UserError
from suites.t2i.prompt_sets import load_prompt_set

__all__ = ["T2ITask", "T2IEval", "make_task", "MODELS"]

MODELS = ("shapes", "sd")
GRID_PROMPTS = 6          # prompts per split shown in the sample grid
GRID_IMAGES = 4           # images per prompt shown in the sample grid


@dataclasses.dataclass
class T2IEval:
    """What one evaluation returns: scalar metrics, one row per image, and a PNG grid of samples."""

    metrics: dict[str, float]
    samples: list[dict[str, Any]]
    grid_png: bytes


def make_task(prompt_set: str, model: str = "shapes", model_dir: str | None = None, reward: str = "clipscore",
              reward_checkpoint: str | None = None, reward_arch: str | None = None,
              eval_images_per_prompt: int = 8, eval_max_prompts: int | None = None, eval_seed: int = 1234,
              eval_batch_size: int = 32, prompt_dir: str | None = None) -> "T2ITask":
    """Registry entry point.  Cheap, and validates everything a trial will need (prompt files, model
    and reward checkpoints), so a bad grid fails in one line before any trial starts."""
    if model not in MODELS:
        raise UserError(f"unknown t2i model {model!r}; use one of {', '.join(MODELS)} (sd needs model_dir)")
    if model == "sd" and not model_dir:
        raise UserError("the sd model needs model_dir: the path of a local diffusers Stable Diffusion folder "
                        "(e.g. CompVis/stable-diffusion-v1-4 in diffusers format); set it in the grid or with "
                        "--set task.model_dir=PATH")
    for name, value, low in (("eval_images_per_prompt", eval_images_per_prompt, 1),
                             ("eval_batch_size", eval_batch_size, 1), ("eval_seed", eval_seed, 0),
                             ("eval_max_prompts", 1 if eval_max_prompts is None else eval_max_prompts, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise UserError(f"t2i task: {name} must be an integer >= {low} (got {value!r})")
    if prompt_dir is not None and not Path(prompt_dir).is_dir():
        raise UserError(f"prompt_dir {prompt_dir} is not a directory; point it at a folder holding "
                        f"<group>/<set>_train.txt and <group>/<set>_test.txt (the layout of suites/t2i/prompts/)")
    train = load_prompt_set(prompt_set, "train", root=prompt_dir)
    test = load_prompt_set(prompt_set, "test", root=prompt_dir)
    task = T2ITask(prompt_set, train, test, model, model_dir, reward, reward_checkpoint, reward_arch,
                   int(eval_images_per_prompt), eval_max_prompts, int(eval_seed), int(eval_batch_size))
    task.check_files()
    return task


@dataclasses.dataclass
class T2ITask:
    prompt_set: str
    train_prompts: tuple[str, ...]
    test_prompts: tuple[str, ...]
    model: str
    model_dir: str | None
    reward: str
    reward_checkpoint: str | None
    reward_arch: str | None
    eval_images_per_prompt: int
    eval_max_prompts: int | None
    eval_seed: int
    eval_batch_size: int
    suite: str = "t2i"

    # ---- what the algorithm uses ------------------------------------------------------------------
    @property
    def shapes_world(self) -> bool:
        return self.prompt_set.startswith("shapes-")

    def check_files(self) -> None:
        """One-line errors for a missing base model or reward checkpoint (nothing heavy is loaded)."""
        if self.model == "shapes":
            from suites.t2i.shapes_model import check_weights
            check_weights(self.model_dir)
        else:
            from suites.t2i.sd import check_sd_folder
            check_sd_folder(self.model_dir)
        from suites.t2i.rewards import check_reward
        check_reward(self.reward, checkpoint=self.reward_checkpoint, arch=self.reward_arch)
        if self.reward != "clipscore":
            check_reward("clipscore", checkpoint=self.reward_checkpoint, arch=self.reward_arch)

    def load_model(self):
        """The base model as a `suites.t2i.model.T2IModel` (weights verified against their hash)."""
        if self.model == "shapes":
            from suites.t2i.shapes_model import load_shapes_model
            return load_shapes_model(self.model_dir)
        from suites.t2i.sd import load_sd_model
        return load_sd_model(self.model_dir)

    def use_device(self, device: str) -> None:
        """Run the reward models that have weights (clipscore) on `device` from now on."""
        self.__dict__["_device"] = str(device)
        for reward in self.__dict__.get("_rewards", {}).values():
            if hasattr(reward, "to"):
                reward.to(device)

    def _reward(self, name: str):
        cache = self.__dict__.setdefault("_rewards", {})
        if name not in cache:
            from suites.t2i.rewards import make_reward
            kwargs = {"checkpoint": self.reward_checkpoint, "arch": self.reward_arch} if name == "clipscore" else {}
            cache[name] = make_reward(name, **kwargs)
            if hasattr(cache[name], "to"):
                cache[name].to(self.__dict__.get("_device", "cpu"))
        return cache[name]

    def reward_fn(self):
        """The training reward: `(images [B,3,H,W] in [0,1], prompts) -> float32 [B]`."""
        return self._reward(self.reward)

    def data_hashes(self) -> dict[str, str]:
        """Hashes of the prompt files, the base model and the reward model weights, for the manifest."""
        digest = hashlib.sha256("\n".join(self.train_prompts + ("--",) + self.test_prompts).encode()).hexdigest()
        hashes = {f"prompts:{self.prompt_set}": digest}
        hashes.update({f"model:{k}": v for k, v in self.load_model_hashes().items()})
        hashes.update({f"reward:{k}": v for k, v in getattr(self._reward("clipscore"), "hashes", {}).items()})
        return hashes

    def load_model_hashes(self) -> dict[str, str]:
        cache = self.__dict__.setdefault("_model_hashes", None)
        if cache is None:
            if self.model == "shapes":
                from suites.t2i.shapes_model import weights_hashes
                cache = weights_hashes(self.model_dir)
            else:
                cache = {"sd_folder": Path(self.model_dir).name}
            self.__dict__["_model_hashes"] = cache
        return cache

    # ---- evaluation ------------------------------------------------------------------------------------
    def eval_prompts(self, split: str) -> tuple[str, ...]:
        prompts = self.train_prompts if split == "train" else self.test_prompts
        return prompts[: self.eval_max_prompts] if self.eval_max_prompts else prompts

    def evaluate(self, generate: Callable[[Sequence[str], Any], Any], step: int, seed: int = 0) -> T2IEval:
        """Judge a generator.  `generate(prompts, generator)` returns images [B,3,H,W] in [0,1] for the
        prompts, drawing all its noise from the torch `generator`.  The noise depends on (eval_seed, the
        run's `seed`, split) only, so one run's evaluations before and after training are paired, and
        different seeds see different noise."""
        import torch

        from suites.t2i.rewards import diversity

        clip = self._reward("clipscore")
        metrics: dict[str, float] = {}
        rows: list[dict[str, Any]] = []
        grids = []
        for split in ("train", "test"):
            prompts = self.eval_prompts(split)
            generator = torch.Generator().manual_seed(self.eval_seed * 1_000_003 + seed * 2 + (split == "test"))
            flat = [p for p in prompts for _ in range(self.eval_images_per_prompt)]
            images = torch.cat([generate(flat[i:i + self.eval_batch_size], generator).float().cpu()
                                for i in range(0, len(flat), self.eval_batch_size)])
            scores = {"clipscore": np.asarray(clip(images, flat), np.float64)}
            if self.reward != "clipscore":
                scores[self.reward] = np.asarray(self.reward_fn()(images, flat), np.float64)
            if self.shapes_world:
                scores["oracle"] = np.asarray(self._reward("oracle")(images, flat), np.float64)
                scores["oracle_binary"] = np.asarray(self._reward("oracle_binary")(images, flat), np.float64)
            div = diversity(images, flat, embed=getattr(clip, "embed_images", None))
            for i, prompt in enumerate(flat):
                row = {"split": split, "prompt": prompt, "image": i % self.eval_images_per_prompt}
                row.update({k: float(v[i]) for k, v in scores.items()})
                row.update({f"diversity_{k}": float(v) for k, v in div[prompt].items() if k != "n"})
                rows.append(row)
            for name, values in scores.items():
                metrics[f"{split}/{name}"] = float(values.mean())
            for name in (k for k in next(iter(div.values())) if k != "n"):
                per_prompt = np.array([div[p][name] for p in prompts], np.float64)
                metrics[f"{split}/diversity_{name}"] = float(np.nanmean(per_prompt)) if np.isfinite(per_prompt).any() \
                    else float("nan")
            grids.append(_grid(images, len(prompts), self.eval_images_per_prompt))
        return T2IEval(metrics, rows, _png(np.concatenate(grids, axis=0)))


def _grid(images, n_prompts: int, per_prompt: int) -> np.ndarray:
    """uint8 [rows*H, cols*W, 3]: one row per prompt (the first GRID_PROMPTS), GRID_IMAGES images each."""
    x = (images.clamp(0, 1) * 255).round().to(dtype=__import__("torch").uint8).permute(0, 2, 3, 1).numpy()
    rows, cols = min(n_prompts, GRID_PROMPTS), min(per_prompt, GRID_IMAGES)
    h, w = x.shape[1:3]
    out = np.full((rows * (h + 1), cols * (w + 1), 3), 128, np.uint8)   # grey gutter: visible on black scenes
    for r in range(rows):
        for c in range(cols):
            out[r * (h + 1):r * (h + 1) + h, c * (w + 1):c * (w + 1) + w] = x[r * per_prompt + c]
    return out


def _png(array: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()
