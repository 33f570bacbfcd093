"""Probe a shapes base model before any RL: how often it satisfies each prompt, and what a query costs.

    python -m suites.t2i.world_probe --model-dir suites/t2i/weights/shapes16-base-v0 --steps 4 5 6 8 10 20 \
        --out results/t2i/diagnostics/cpu/shapes16

For every DDIM step count T and shapes-v0 prompt set (train split by default), `--images` images per prompt
from one seeded noise stream (DDIM, eta 1, CFG 5 against "", as the grids sample), judged by the oracle:
  graded / binary        mean oracle scores (all parts: binary)
  prompts_mid            share of the prompts whose binary success rate lies in [0.2, 0.8]: groups of such a
                         prompt's images differ in whether they satisfy it (issue 17's "intermediate" base)
  prompt_sd              mean over prompts of the binary success's sd within the prompt (0.5 at rate 0.5)
  clipscore, clip_sd     the training reward's mean, and its sd within a prompt (mean over prompts)
  cpu_ms_per_image       CPU time of sampling one image (this process, batch `--batch-size`)
Writes world_probe.md / .csv to `--out` (rows per T and set) and world_probe_prompts.csv (per prompt).
Deterministic for a given model, seed and batch size.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from suites.errors import UserError

SETS = ("composition", "attribute", "spatial", "counting")
NOTE = ("Per DDIM step count T and shapes-v0 prompt set, `images` images per prompt of the split (seed, DDIM "
        "eta 1, CFG 5 against \"\"), judged by the oracle: graded / binary = mean scores; prompts_mid = share of "
        "prompts whose binary success rate is in [0.2, 0.8]; prompt_sd = mean within-prompt sd of binary "
        "success; clipscore / clip_sd = the reward's mean and mean within-prompt sd; cpu_ms_per_image = CPU "
        "time of sampling one image in batches of `batch`.  Regenerate: `python -m suites.t2i.world_probe` "
        "with the arguments in results/t2i/diagnostics/cpu/README.md.")


def probe(model, steps: list[int], images: int, seed: int, split: str, batch_size: int, sets=SETS):
    """(rows per (T, set), rows per (T, set, prompt)) as lists of dicts."""
    import torch

    from suites.t2i.prompt_sets import load_prompt_set
    from suites.t2i.rewards import make_reward
    from suites.t2i.shapes.oracle import score_images
    from suites.t2i.shapes_model import sample_images

    clip = make_reward("clipscore")
    rows, per_prompt = [], []
    for num_steps in steps:
        for name in sets:
            prompts = load_prompt_set(f"shapes-v0/{name}", split)
            flat = [p for p in prompts for _ in range(images)]
            generator = torch.Generator().manual_seed(seed)
            started = time.process_time()
            x = sample_images(model, flat, num_steps=num_steps, generator=generator, batch_size=batch_size)
            cpu = time.process_time() - started
            graded, binary = score_images(x.numpy(), flat)
            reward = np.asarray(clip(x, flat), np.float64)
            by_prompt = binary.reshape(len(prompts), images).astype(np.float64)
            rates = by_prompt.mean(1)
            rows.append({"steps": num_steps, "prompt set": name, "split": split, "prompts": len(prompts),
                         "images": images, "graded": float(graded.mean()), "binary": float(binary.mean()),
                         "prompts_mid": float(np.mean((rates >= 0.2) & (rates <= 0.8))),
                         "prompt_sd": float(by_prompt.std(1).mean()), "clipscore": float(reward.mean()),
                         "clip_sd": float(reward.reshape(len(prompts), images).std(1).mean()),
                         "cpu_ms_per_image": 1000 * cpu / len(flat), "batch": batch_size})
            for prompt, rate, g in zip(prompts, rates, graded.reshape(len(prompts), images).mean(1)):
                per_prompt.append({"steps": num_steps, "prompt set": name, "split": split, "prompt": prompt,
                                   "binary": float(rate), "graded": float(g)})
            r = rows[-1]
            print(f"T={num_steps:2d} {name:12s} graded {r['graded']:.3f} binary {r['binary']:.3f} "
                  f"mid {r['prompts_mid']:.2f} clip {r['clipscore']:.3f} sd {r['clip_sd']:.3f} "
                  f"{r['cpu_ms_per_image']:.1f} ms/image", flush=True)
    return rows, per_prompt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m suites.t2i.world_probe", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", default=None, help="shapes weights directory (default: shapes-base-v0)")
    parser.add_argument("--steps", type=int, nargs="+", default=[10], help="DDIM step counts to probe")
    parser.add_argument("--images", type=int, default=16, help="images per prompt")
    parser.add_argument("--split", choices=("train", "test"), default="train")
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", required=True, help="directory for world_probe.md / .csv")
    args = parser.parse_args(argv)
    for name in ("images", "batch_size", "threads"):
        if getattr(args, name) < 1:
            raise UserError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if min(args.steps) < 1:
        raise UserError(f"--steps must be >= 1, got {min(args.steps)}")
    import pandas as pd
    import torch

    from benchmarks.results import atomic_write_text
    from suites.t2i.shapes_model import load_shapes_model

    torch.set_num_threads(args.threads)
    model = load_shapes_model(args.model_dir)
    rows, per_prompt = probe(model, sorted(set(args.steps)), args.images, args.seed, args.split, args.batch_size)
    out = Path(args.out)
    title = f"Base model {model.name}: oracle success and query cost per DDIM step count ({args.split} split)"
    out.mkdir(parents=True, exist_ok=True)
    frame = pd.DataFrame(rows)
    atomic_write_text(out / "world_probe.csv", frame.to_csv(index=False, float_format="%.4f"))
    atomic_write_text(out / "world_probe.md", f"### {title}\n\n{frame.to_markdown(index=False, floatfmt='.4f')}\n\n"
                                         f"{NOTE}\n")
    atomic_write_text(out / "world_probe_prompts.csv", pd.DataFrame(per_prompt).to_csv(index=False, float_format="%.4f"))
    print(f"wrote {out / 'world_probe.md'}")
    return 0


if __name__ == "__main__":
    from suites.errors import run_script
    run_script(main)
