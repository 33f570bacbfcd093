"""Controlled Markov processes (CMPs) of the one-step FB paper's didactic setting (fb.md §4.1).

A CMP here is a finite MDP without reward plus the offline data distribution:
  P[s, a, s']  transition probabilities,
  beta[s, a]   the behaviour policy that collected the data,
  rho[s]       the distribution of the data's current states (the data distribution over
               state-action pairs is D(s, a) = rho(s) beta(a | s)),
  gamma        the discount in [0, 1).

Both paper CMPs use a uniform behaviour policy and a uniform rho (the paper does not give them;
uniform is the neutral choice, written in the protocol) and gamma = 0.9 (fb.md §4.3).
A custom CMP is loaded from a YAML/JSON file and validated (`load_cmp`).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from suites.errors import UserError

__all__ = ["CMP", "three_state", "five_state", "load_cmp", "CMP_FILE_KEYS"]

_TOL = 1e-6


@dataclasses.dataclass(frozen=True, eq=False)
class CMP:
    name: str
    P: np.ndarray       # [S, A, S]
    beta: np.ndarray    # [S, A]
    rho: np.ndarray     # [S]
    gamma: float

    @property
    def n_states(self) -> int:
        return self.P.shape[0]

    @property
    def n_actions(self) -> int:
        return self.P.shape[1]

    @property
    def data_distribution(self) -> np.ndarray:
        """D(s, a) = rho(s) beta(a|s), flattened over x = s * A + a."""
        return (self.rho[:, None] * self.beta).reshape(-1)

    @property
    def next_state_distribution(self) -> np.ndarray:
        """Marginal of s' in the data: sum_{s,a} D(s,a) P(s'|s,a).  Touati's rho(ds')."""
        return np.einsum("x,xt->t", self.data_distribution, self.P.reshape(-1, self.n_states))

    def digest(self) -> str:
        """sha256 of the CMP's numbers; recorded in every run's manifest."""
        payload = json.dumps({"P": self.P.tolist(), "beta": self.beta.tolist(), "rho": self.rho.tolist(),
                              "gamma": self.gamma}, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()


def _uniform(n_states: int, n_actions: int) -> tuple[np.ndarray, np.ndarray]:
    return np.full((n_states, n_actions), 1.0 / n_actions), np.full(n_states, 1.0 / n_states)


def three_state(gamma: float = 0.9) -> CMP:
    """From s0, action a_i moves deterministically to s_i (i = 0, 1, 2); s1 and s2 are absorbing."""
    P = np.zeros((3, 3, 3))
    for a in range(3):
        P[0, a, a] = 1.0
        P[1, a, 1] = 1.0
        P[2, a, 2] = 1.0
    beta, rho = _uniform(3, 3)
    return CMP("three-state", P, beta, rho, gamma)


def five_state(gamma: float = 0.9) -> CMP:
    """Circular: a0 moves s_i -> s_{i+1 mod 5}; a1 moves s_i -> s_{i-1 mod 5} w.p. 0.7, stays w.p. 0.3."""
    P = np.zeros((5, 2, 5))
    for s in range(5):
        P[s, 0, (s + 1) % 5] = 1.0
        P[s, 1, (s - 1) % 5] = 0.7
        P[s, 1, s] = 0.3
    beta, rho = _uniform(5, 2)
    return CMP("five-state", P, beta, rho, gamma)


CMP_FILE_KEYS = {
    "name": "optional label",
    "gamma": "discount in [0, 1)",
    "transitions": "P[s][a][s'], nested lists of probabilities",
    "behaviour_policy": "beta[s][a], nested lists of probabilities",
    "rho": "rho[s], the distribution of the data's states",
}


def load_cmp(path: str | Path) -> CMP:
    """Load and validate a CMP file (YAML or JSON with the keys of `CMP_FILE_KEYS`)."""
    from suites import yaml_strict

    path = Path(path)
    where = f"CMP file {path}"
    if not path.is_file():
        raise UserError(f"{where} does not exist; pass the path of a YAML file with keys "
                        f"{', '.join(CMP_FILE_KEYS)} (example: suites/didactic/cmps/four-state-chain.yaml)")
    raw = yaml_strict.loads(path.read_text(), where)
    if not isinstance(raw, dict):
        raise UserError(f"{where} must be a mapping with keys {', '.join(CMP_FILE_KEYS)}")
    unknown = sorted(set(raw) - set(CMP_FILE_KEYS))
    if unknown:
        raise UserError(f"{where}: unknown key {unknown[0]!r}; allowed keys are {', '.join(CMP_FILE_KEYS)}")
    missing = [k for k in ("gamma", "transitions", "behaviour_policy", "rho") if k not in raw]
    if missing:
        raise UserError(f"{where}: missing key {missing[0]!r} ({CMP_FILE_KEYS[missing[0]]})")
    name = str(raw.get("name", path.stem))
    P = _array(raw["transitions"], 3, "transitions", where)
    beta = _array(raw["behaviour_policy"], 2, "behaviour_policy", where)
    rho = _array(raw["rho"], 1, "rho", where)
    gamma = raw["gamma"]
    if isinstance(gamma, bool) or not isinstance(gamma, (int, float)):
        raise UserError(f"{where}: gamma must be a number in [0, 1), got {gamma!r}")
    return validate(CMP(name, P, beta, rho, float(gamma)), where)


def _array(value: Any, ndim: int, key: str, where: str) -> np.ndarray:
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (ValueError, TypeError):
        raise UserError(f"{where}: {key} must be a rectangular nested list of numbers") from None
    if arr.ndim != ndim:
        raise UserError(f"{where}: {key} must have {ndim} dimensions, got shape {list(arr.shape)}")
    return arr


def validate(cmp: CMP, where: str = "CMP") -> CMP:
    """Check shapes, stochastic rows and gamma; raise `UserError` naming the first problem."""
    S, A, S2 = cmp.P.shape
    if S == 0 or A == 0:
        raise UserError(f"{where}: transitions must have at least one state and one action")
    if S2 != S:
        raise UserError(f"{where}: transitions has shape {list(cmp.P.shape)}; the last axis must equal the "
                        f"number of states ({S})")
    if cmp.beta.shape != (S, A):
        raise UserError(f"{where}: behaviour_policy has shape {list(cmp.beta.shape)}, expected [{S}, {A}] "
                        f"(states x actions of transitions)")
    if cmp.rho.shape != (S,):
        raise UserError(f"{where}: rho has shape {list(cmp.rho.shape)}, expected [{S}]")
    for key, arr, axis_name in (("transitions", cmp.P, "P"), ("behaviour_policy", cmp.beta, "beta"),
                                ("rho", cmp.rho[None], "rho")):
        if not np.all(np.isfinite(arr)) or np.any(arr < 0):
            raise UserError(f"{where}: {key} has negative or non-finite entries; probabilities must be >= 0")
        sums = arr.sum(-1)
        bad = np.argwhere(np.abs(sums - 1.0) > _TOL)
        if len(bad):
            idx = tuple(int(i) for i in bad[0])
            label = axis_name if key == "rho" else f"{axis_name}{''.join(f'[{i}]' for i in idx)}"
            raise UserError(f"{where}: {key} row {label} sums to {float(sums[tuple(bad[0])]):.6g}, not 1; "
                            f"each row must be a probability distribution")
    if not 0.0 <= cmp.gamma < 1.0:
        raise UserError(f"{where}: gamma is {cmp.gamma}; it must lie in [0, 1)")
    return cmp
