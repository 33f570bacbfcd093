"""How far can the training reward rise?  The reward headroom of the t2i grid, per shapes prompt set.

DDPO's clipscore gains are small at the cpu size; this separates "the reward cannot tell" from "the
optimiser did not get there".  For the grid's own evaluation prompts and image count it scores:

  render_clean        the renderer's images that satisfy each prompt exactly (no other objects)
  render_distractors  the same with random distractor objects (never of a prompt's colour and shape)
  base / final        the grid's base and fine-tuned models (eval at step 0 and the last step, mean over the
                      committed seeds; read from the grid's results directory, by default the 32 x 32
                      grid's committed runs in results/t2i/diagnostics/cpu/shapes32)

and reports headroom = render_clean - base and the share of it the fine-tuned model gained (headroom.md).

It also asks which parts of a prompt the reward can see (sensitivity.md).  For each evaluation prompt it
renders an image that satisfies the prompt and one that satisfies a minimal violation of it, scores both
against the ORIGINAL prompt, and reports how often the satisfying image scores higher (pairwise accuracy;
0.5 = the reward is blind to that part) and the mean margin.  Violations (`violations`): another colour or
another shape for one object, another count (counting prompts), the opposite relation (relation prompts:
the same two objects, placed the other way round).  RL against this reward can only fix what it sees.

Seeing a part on clean renders is not enough: DDPO's advantage ranks the model's OWN samples of a prompt
against each other, so what it can learn is what the reward ranks among those.  agreement.md samples
the base model on each train-split evaluation prompt (`--agreement-images` images, the algorithm's own
sampler settings: DDIM steps, guidance, eta) and asks, within each prompt, whether the images the reward
ranks higher are the ones the oracle judges better: Spearman's rho between clipscore and the oracle's
graded score, and the oracle's graded / binary score of the reward's top half minus its bottom half (the
sign DDPO's per-prompt advantage gives them).  rho ~ 0: the reward's ranking is unrelated to what the
prompt asks, so its gains need not show in the oracle.

    python -m benchmarks.diagnose_t2i [--size cpu] [--config FILE] [--algorithm ddpo]
                                      [--results-dir results] [--out DIR] [--agreement-images 16]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks.config import load_experiment
from benchmarks.results import SCALARS, atomic_write_csv, atomic_write_text, is_complete, run_dir
from suites import registry
from suites.errors import UserError

# At the cpu size, the grid whose runs the committed files under results/t2i/diagnostics/cpu/ describe: the
# 32 x 32 shapes world, the cpu default until issue 17's 16 x 16 world replaced it.  Pass --config
# benchmarks/configs/t2i.yaml (and --results-dir results, --out elsewhere) for today's default; these defaults
# never overwrite a 32 x 32 file with a 16 x 16 one.  Other sizes default to the suite's grid file.
SHAPES32_CONFIG = Path(__file__).parent / "configs" / "t2i_shapes32.yaml"
SHAPES32_RESULTS = Path("results/t2i/diagnostics/cpu/shapes32")


def default_grid(size: str, config: Path | None) -> Path | None:
    """--config as given; if not given, t2i_shapes32.yaml at the cpu size, else the suite's t2i.yaml (None)."""
    return config if config is not None else (SHAPES32_CONFIG if size == "cpu" else None)


def diagnostic_paths(size: str, config: Path | None, results_dir: str | Path | None,
                     out: str | Path | None) -> tuple[Path | None, Path, Path]:
    """(grid file, folder holding the grid's runs, output folder) for a t2i diagnostic script.

    Defaults: default_grid's grid; its runs in SHAPES32_RESULTS for the 32 x 32 grid, else in results; output
    in <results>/t2i/diagnostics/<size>, where <results> is results unless results_dir is given.  Another
    grid (--config) must name its own output folder, so its files never overwrite the committed 32 x 32 ones.
    """
    if config is not None and out is None:
        raise UserError(f"--config {config}: also give --out DIR (the default, results/t2i/diagnostics/{size}, "
                        "holds the 32 x 32 grid's committed diagnostics)")
    grid = default_grid(size, config)
    if results_dir is None:
        runs = SHAPES32_RESULTS if config is None and size == "cpu" else Path("results")
        default_out = Path("results") / "t2i" / "diagnostics" / size
    else:
        runs = Path(results_dir)
        default_out = runs / "t2i" / "diagnostics" / size
    return grid, runs, Path(out) if out is not None else default_out


def render_scores(task, split: str, images_per_prompt: int, distractors: bool, seed: int = 0) -> float:
    """Mean clipscore of rendered images that satisfy the split's evaluation prompts."""
    import torch

    from suites.t2i.shapes.prompts import scene_for
    from suites.t2i.shapes.render import render

    rng = np.random.default_rng(seed)
    flat = [p for p in task.eval_prompts(split) for _ in range(images_per_prompt)]
    images = render([scene_for(p, rng, n_distractors=None if distractors else 0) for p in flat], np.float32)
    return float(np.mean(task.reward_fn()(torch.from_numpy(images).permute(0, 3, 1, 2), flat)))


OPPOSITE = {"left": "right", "right": "left", "above": "below", "below": "above"}


def violations(prompt, rng: np.random.Generator) -> dict[str, object]:
    """Minimal edits of a parsed prompt that make it false, by kind: 'colour' and 'shape' (of a random
    object), 'count' (counting prompts: the nearest other count) and 'relation' (relation prompts: the
    opposite one).  Colours are drawn from the renderer's base colours and exclude every colour and
    shape combination the prompt already names, so the edit cannot be satisfied by the other object."""
    import dataclasses

    from suites.t2i.shapes.render import BASE_COLOURS, SHAPES

    out = {}
    i = int(rng.integers(len(prompt.objects)))
    phrase = prompt.objects[i]
    named = {p.kind for p in prompt.objects}

    def replaced(**change):
        objects = list(prompt.objects)
        objects[i] = dataclasses.replace(phrase, **change)
        return dataclasses.replace(prompt, objects=tuple(objects))

    colours = [c for c in BASE_COLOURS if (c, phrase.shape) not in named]
    out["colour"] = replaced(colour=colours[int(rng.integers(len(colours)))])
    shapes = [s for s in SHAPES if (phrase.colour, s) not in named]
    out["shape"] = replaced(shape=shapes[int(rng.integers(len(shapes)))])
    if prompt.family == "counting":
        out["count"] = replaced(count=phrase.count + 1 if phrase.count < 3 else phrase.count - 1)
    if prompt.relation is not None:
        out["relation"] = dataclasses.replace(prompt, relation=OPPOSITE[prompt.relation])
    return out


def sensitivity_rows(task, split: str, images_per_prompt: int, seed: int = 0) -> list[dict]:
    """Per kind of violation: pairwise accuracy and mean margin of the reward, satisfying render against
    violating render, both scored with the original prompt (one pair per prompt x image)."""
    import torch

    from suites.t2i.shapes.prompts import parse_prompt, scene_for
    from suites.t2i.shapes.render import render

    rng = np.random.default_rng(seed)
    pairs: dict[str, tuple[list, list, list]] = {}
    for text in task.eval_prompts(split):
        prompt = parse_prompt(text)
        for _ in range(images_per_prompt):
            for kind, wrong in violations(prompt, rng).items():
                good, bad, texts = pairs.setdefault(kind, ([], [], []))
                good.append(scene_for(prompt, rng, n_distractors=0))
                bad.append(scene_for(wrong, rng, n_distractors=0))
                texts.append(text)
    rows = []
    for kind, (good, bad, texts) in sorted(pairs.items()):
        scores = [np.asarray(task.reward_fn()(torch.from_numpy(render(scenes, np.float32)).permute(0, 3, 1, 2),
                                              texts), np.float64) for scenes in (good, bad)]
        margin = scores[0] - scores[1]
        rows.append({"violation": kind, "pairs": len(texts), "accuracy": float(np.mean(margin > 0)),
                     "margin": float(margin.mean()), "satisfying": float(scores[0].mean()),
                     "violating": float(scores[1].mean())})
    return rows


def prompt_agreement(reward, graded, binary) -> dict[str, float]:
    """Within one prompt's images: does the reward rank them like the oracle?  rho = Spearman correlation
    of reward and graded oracle score (average ranks for ties; NaN when either is constant); gap_* = the
    oracle's mean over the images above the reward's median minus over the rest (NaN when none is above)."""
    reward, graded, binary = (np.asarray(v, np.float64) for v in (reward, graded, binary))
    rho = float("nan")
    if reward.std() > 0 and graded.std() > 0:
        from scipy.stats import spearmanr
        rho = float(spearmanr(reward, graded).statistic)
    top = reward > np.median(reward)
    if top.all() or not top.any():
        gaps = (float("nan"), float("nan"))
    else:
        gaps = tuple(float(v[top].mean() - v[~top].mean()) for v in (graded, binary))
    return {"rho": rho, "gap_graded": gaps[0], "gap_binary": gaps[1]}


def agreement_rows(task, algo_config: dict, images_per_prompt: int, seed: int = 0) -> tuple[dict, list[dict]]:
    """Sample the base model on the train split's evaluation prompts with the algorithm's sampler settings;
    returns the set's summary (means over the prompts where each statistic is defined, rho with a
    Student-t 95% CI over prompts) and one `prompt_agreement` row per prompt."""
    import torch

    from algorithms.diffusion.core import sample_trajectories
    from benchmarks.stats import t_estimate
    from suites.t2i.shapes.oracle import score_images

    model = task.load_model()
    generator = torch.Generator().manual_seed(seed)
    per_prompt = []
    for prompt in task.eval_prompts("train"):
        flat = [prompt] * images_per_prompt
        images = sample_trajectories(model, flat, int(algo_config["sample_num_steps"]),
                                     float(algo_config["guidance_scale"]), float(algo_config["sample_eta"]),
                                     generator=generator).images.float()
        clip = np.asarray(task.reward_fn()(images, flat), np.float64)
        graded, binary = score_images(images, flat)
        per_prompt.append({"prompt": prompt, "clipscore_mean": float(clip.mean()), "clipscore_sd": float(clip.std()),
                           "oracle_graded": float(np.mean(graded)), "oracle_binary": float(np.mean(binary)),
                           **prompt_agreement(clip, graded, binary)})
    frame = pd.DataFrame(per_prompt)
    rho = frame.rho.dropna().to_numpy()
    # a correlation lies in [-1, 1], so clipping the t interval there changes no coverage (few prompts: wide)
    _, low, high, _ = t_estimate(rho) if len(rho) else (np.nan, np.nan, np.nan, np.nan)
    low, high = (float(np.clip(v, -1.0, 1.0)) for v in (low, high))
    summary = {"prompts": len(frame), "images_per_prompt": images_per_prompt,
               "clipscore_sd_within_prompt": float(frame.clipscore_sd.mean()),
               "oracle_graded": float(frame.oracle_graded.mean()),        # equal images per prompt
               "prompts_with_rho": len(rho), "rho": float(rho.mean()) if len(rho) else float("nan"),
               "rho_low": low, "rho_high": high,
               "gap_graded": float(frame.gap_graded.mean()), "gap_binary": float(frame.gap_binary.mean())}
    return summary, per_prompt


def model_scores(results_root: Path, trials) -> dict[str, tuple[float, float, int]]:
    """Per split, the mean eval clipscore of the base (first eval) and final (last eval) models over the
    complete runs, and how many runs that is."""
    scores = {split: ([], []) for split in ("train", "test")}
    for trial in trials:
        if not is_complete(results_root, trial):
            continue
        rows = pd.read_json(run_dir(results_root, trial) / SCALARS, lines=True)
        rows = rows[rows.split == "eval"].sort_values("step")
        for split, (base, final) in scores.items():
            values = rows[rows.metric == f"{split}/clipscore"].value
            base.append(values.iloc[0])
            final.append(values.iloc[-1])
    return {split: (float(np.mean(base)), float(np.mean(final)), len(base)) if base else (float("nan"),) * 2 + (0,)
            for split, (base, final) in scores.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="cpu", help="the grid size whose runs are read (default: cpu)")
    parser.add_argument("--config", type=Path, default=None,
                        help="grid file whose runs are read (default at --size cpu: benchmarks/configs/"
                             "t2i_shapes32.yaml, the 32 x 32 grid the committed diagnostics describe; otherwise "
                             "benchmarks/configs/t2i.yaml)")
    parser.add_argument("--algorithm", default="ddpo", help="whose runs give base / final (default: ddpo)")
    parser.add_argument("--results-dir", default=None,
                        help=f"where the grid's runs are (default with the default grid at --size cpu: "
                             f"{SHAPES32_RESULTS}, the 32 x 32 grid's; otherwise results)")
    parser.add_argument("--out", default=None, help="where to write headroom.md / .csv "
                                                    "(default: <results>/t2i/diagnostics/<size>, where <results> "
                                                    "is results unless --results-dir is given; required with "
                                                    "--config)")
    parser.add_argument("--agreement-images", type=int, default=16,
                        help="base-model images per train prompt for agreement.md (default 16; 0 skips it)")
    args = parser.parse_args(argv)
    try:
        args.config, results_root, out = diagnostic_paths(args.size, args.config, args.results_dir, args.out)
        exp = load_experiment("t2i", args.size, args.config)
        trials = [t for t in exp.trials() if t.algorithm == args.algorithm]
        if not trials:
            raise UserError(f"the t2i {args.size} grid has no {args.algorithm!r} trials")
        task_ids = sorted({t.task_id for t in trials if "shapes-" in t.task_id})
        if not task_ids:
            raise UserError(f"the t2i {args.size} grid has no shapes-world task; the headroom needs the renderer")
        if args.agreement_images == 1 or args.agreement_images < 0:
            raise UserError(f"--agreement-images must be 0 (skip) or >= 2 to rank images (got {args.agreement_images})")
        sampler = ("sample_num_steps", "guidance_scale", "sample_eta")
        if args.agreement_images and not all(k in trials[0].algo_config for k in sampler):
            raise UserError(f"{args.algorithm!r} has no diffusion sampler settings ({', '.join(sampler)}) for "
                            f"agreement.md; pick a diffusion algorithm or pass --agreement-images 0")
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    rows, sensitivity, agreement, agreement_prompts = [], [], [], []
    for task_id in task_ids:
        mine = [t for t in trials if t.task_id == task_id]
        kwargs = dict(mine[0].task_kwargs)
        task = registry.get(task_id).with_kwargs(**kwargs).make()
        name = task_id.split("/")[1]
        for split, (base, final, runs) in model_scores(results_root, mine).items():
            clean = render_scores(task, split, task.eval_images_per_prompt, distractors=False)
            rows.append({"prompt set": name, "split": split, "runs": runs,
                         "render_clean": clean,
                         "render_distractors": render_scores(task, split, task.eval_images_per_prompt, True),
                         "base": base, "final": final, "headroom": clean - base,
                         "share_gained": (final - base) / (clean - base)})
        for split in ("train", "test"):
            sensitivity += [{"prompt set": name, "split": split, **row}
                            for row in sensitivity_rows(task, split, max(task.eval_images_per_prompt, 4))]
        if args.agreement_images:
            summary, prompts = agreement_rows(task, mine[0].algo_config, args.agreement_images)
            agreement.append({"prompt set": name, **summary})
            agreement_prompts += [{"prompt set": name, **row} for row in prompts]
    if agreement:
        atomic_write_csv(out / "agreement_prompts.csv", pd.DataFrame(agreement_prompts))
        write_table(out, "agreement", f"Does the reward rank the base model's own samples like the oracle? "
                    f"t2i {args.size} grid, train prompts", pd.DataFrame(agreement),
                    f"Per train-split evaluation prompt, {args.agreement_images} images of the base model sampled "
                    f"with the {args.algorithm} grid's sampler settings (seed 0); within each prompt: rho = "
                    "Spearman correlation of clipscore (the training reward) and the oracle's graded score (mean "
                    "over the `prompts_with_rho` prompts where neither is constant; rho_low / rho_high: Student-t "
                    "95% CI over those prompts, whose number is `prompts_with_rho`, clipped to [-1, 1]); "
                    "gap_graded / gap_binary = the oracle's graded / binary score of "
                    "the images above the prompt's median clipscore minus the rest, i.e. what a per-prompt "
                    "advantage favours.  rho ~ 0: the reward ranks the model's own samples by something the "
                    "prompt does not ask for.  clipscore_sd_within_prompt: the reward's spread among one prompt's "
                    "images.  Per prompt: agreement_prompts.csv.  Regenerate: `python -m benchmarks.diagnose_t2i`.")
    write_table(out, "sensitivity", f"Reward sensitivity, t2i {args.size} grid prompts", pd.DataFrame(sensitivity),
                "Which prompt parts the reward (clipscore) can see: per evaluation prompt and image, a render that "
                "satisfies the prompt against a render of a minimal violation (another colour / shape of one "
                "object, another count, the opposite relation), both scored with the original prompt.  accuracy = "
                "share of pairs where the satisfying render scores higher (0.5: blind); margin = mean score "
                "difference.  Regenerate: `python -m benchmarks.diagnose_t2i`.")
    write_table(out, "headroom", f"Reward headroom of the t2i {args.size} grid", pd.DataFrame(rows),
                "clipscore (the training reward) of the grid's evaluation prompts, the same number of images each; "
                "base / final: the grid's models, mean over `runs` seeds; headroom = render_clean - base; "
                "share_gained = (final - base) / headroom.  Regenerate: `python -m benchmarks.diagnose_t2i`.")
    return 0


def write_table(out: Path, name: str, title: str, frame: pd.DataFrame, note: str) -> None:
    """<out>/<name>.csv and .md (title, table, note), written atomically; the table is also printed."""
    table = frame.to_markdown(index=False, floatfmt=".4f")
    atomic_write_csv(out / f"{name}.csv", frame)
    atomic_write_text(out / f"{name}.md", f"### {title}\n\n{table}\n\n{note}\n")
    print(table)
    print(f"wrote {out / f'{name}.md'}")


if __name__ == "__main__":
    sys.exit(main())
