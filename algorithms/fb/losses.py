"""Shared FB math: the successor-measure loss, the orthonormality loss, latents and task inference.

Two conventions (fb.md §1) share these functions; `convention` picks the constants:

  "touati"  controllable_agent FB (fb.md §2.1): M^pi counts from the next state and is not normalised,
            B takes the next state, the diagonal term has no (1 - gamma), ensemble losses are SUMMED,
            ortho = mean_{i!=j} C_ij^2 - 2 mean_i C_ii.
  "zheng"   onestep-fb (fb.md §2.3, §3): M normalised and counting t = 0, B takes (s, a), the diagonal
            term is weighted by (1 - gamma), ensemble losses are AVERAGED,
            ortho = 0.5 mean_{i!=j} C_ij^2 - mean_i C_ii  (half of Touati's).

The TD least-squares loss (fb.md §2.4, the one-step FB paper's Eq. 12) is

    L = 1/2 E_{x ~ D, g ~ rho}[(F(x)^T B(g) - gamma F_bar(x')^T B_bar(g))^2] - c E_{(x, g+) ~ D}[F(x)^T B(g+)]

where g+ is the row's own goal (Touati: its next state; Zheng: its own (s, a)).  With a batch of
rows i and goals j, `M[i, j] = F(x_i)^T B(g_j)`.  Every estimator below is a weighted sum over pairs:

  * i.i.d. minibatch (weight=None): the reference code's estimator, pairs i != j with weight
    1/(N(N-1)) and positives i with weight 1/N;
  * weighted support (weight=p): the rows are the distinct outcomes of the data distribution with
    probabilities p, so the exact expectation has pair weights p_i p_j (diagonal included, since
    two independent draws can coincide) and positive weights p_i.

tests/test_fb_losses.py checks the first against explicit double loops over i != j for both
conventions, and the second against the closed-form fixed point.
"""
from __future__ import annotations

import functools
import math

import torch

CONVENTIONS = ("touati", "zheng")

__all__ = ["CONVENTIONS", "pair_weights", "successor_loss", "orthonormality_loss", "project_to_sphere",
           "sample_latents", "infer_task_vector"]


def pair_weights(n: int, weight: torch.Tensor | None = None, dtype=torch.float32, device=None
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """(pair weights [N, N], positive weights [N]) of the estimator; see the module docstring.
    The i.i.d. weights depend only on (N, dtype, device) and are built once (callers never modify them)."""
    if weight is None:
        return _iid_pair_weights(n, dtype, torch.device(device) if device is not None else torch.device("cpu"))
    p = weight.to(dtype) / weight.sum()
    return torch.outer(p, p), p


@functools.lru_cache(maxsize=16)
def _iid_pair_weights(n: int, dtype: torch.dtype, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    off = (1.0 - torch.eye(n, dtype=dtype, device=device)) / (n * (n - 1))
    return off, torch.full((n,), 1.0 / n, dtype=dtype, device=device)


def successor_loss(M: torch.Tensor, target_M: torch.Tensor, discount: float, convention: str,
                   weight: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """FB representation loss.

    M:        [..., E, N, N] predictions F_e(x_i)^T B(g_j) for E forward heads (ensembles); leading
              dims (e.g. several latents per row) are averaged;
    target_M: [..., N, N] target F_bar(x'_i)^T B_bar(g_j), already aggregated over heads (stop-gradient);
    discount: gamma (times the data's discount where episodes can end).
    Returns (loss, parts) with parts "offdiag" and "diag" (summed or averaged over heads).
    """
    if convention not in CONVENTIONS:
        raise ValueError(f"convention must be one of {CONVENTIONS}, not {convention!r}")
    n = M.shape[-1]
    W, pos = pair_weights(n, weight, M.dtype, M.device)
    diff = M - discount * target_M.detach().unsqueeze(-3)
    offdiag = 0.5 * (W * diff.pow(2)).sum((-2, -1))                                    # [..., E]
    diag = -torch.einsum("i,...i->...", pos, torch.diagonal(M, dim1=-2, dim2=-1))     # [..., E]
    offdiag = offdiag.reshape(-1, M.shape[-3]).mean(0)                                  # per head
    diag = diag.reshape(-1, M.shape[-3]).mean(0)
    if convention == "zheng":
        diag = (1.0 - discount) * diag
        offdiag, diag = offdiag.mean(), diag.mean()
    else:
        offdiag, diag = offdiag.sum(), diag.sum()
    return offdiag + diag, {"offdiag": offdiag.detach(), "diag": diag.detach()}


def orthonormality_loss(B: torch.Tensor, convention: str, weight: torch.Tensor | None = None) -> torch.Tensor:
    """Estimate of ||E[B B^T] - I||^2 up to a constant (Touati) or half of it (Zheng).  B: [N, d]."""
    C = B @ B.T
    W, pos = pair_weights(B.shape[0], weight, B.dtype, B.device)
    offdiag = (W * C.pow(2)).sum()
    diag = (pos * torch.diagonal(C)).sum()
    if convention == "touati":
        return offdiag - 2.0 * diag
    if convention == "zheng":
        return 0.5 * offdiag - diag
    raise ValueError(f"convention must be one of {CONVENTIONS}, not {convention!r}")


def project_to_sphere(z: torch.Tensor) -> torch.Tensor:
    """sqrt(d) * z / ||z||, row-wise: latents live on the sphere of radius sqrt(d)."""
    return math.sqrt(z.shape[-1]) * torch.nn.functional.normalize(z, dim=-1)


def sample_latents(n: int, dim: int, generator: torch.Generator, mix_ratio: float,
                   goal_embeddings: torch.Tensor | None = None, goal_weight: torch.Tensor | None = None,
                   dtype=torch.float32, device=None) -> torch.Tensor:
    """Training latents: Gaussian directions on the sqrt(d)-sphere, and with probability `mix_ratio`
    per row the projected backward embedding of a random batch goal (fb.md §2.1 `sample_z`, §3).

    goal_embeddings: [G, d] B of the batch goals (computed by the caller under no_grad), or None;
    goal_weight:     [G] probabilities of those goals (a weighted support); uniform when None.
    device:          where the latents go (default: the goals' device, else the CPU).  The random draws
                     always come from the CPU `generator`, so a run is the same stream on every device.
    """
    if device is None:
        device = "cpu" if goal_embeddings is None else goal_embeddings.device
    z = project_to_sphere(torch.randn(n, dim, generator=generator, dtype=dtype).to(device))
    if goal_embeddings is None or mix_ratio <= 0:
        return z
    use_goal = (torch.rand(n, generator=generator) < mix_ratio).to(device)
    probs = (torch.ones(goal_embeddings.shape[0]) if goal_weight is None else goal_weight.cpu()).to(torch.float64)
    idx = torch.multinomial(probs, n, replacement=True, generator=generator).to(goal_embeddings.device)
    goals = project_to_sphere(goal_embeddings[idx].to(dtype)).to(device)
    return torch.where(use_goal[:, None], goals, z)


def infer_task_vector(B: torch.Tensor, reward: torch.Tensor, weight: torch.Tensor | None = None,
                      temperature: float = 0.0) -> torch.Tensor:
    """z_r = E[w r B] over the inference samples (not yet projected to the sphere).

    B: [N, d] backward embeddings of the samples' goals; reward: [N] their rewards;
    weight: [N] sample probabilities (a weighted support) or None for i.i.d. samples;
    temperature: T of the one-step FB reference (fb.md §3): weights softmax(T r) (times the sample
    probabilities); T = 0 gives the plain expectation E[r B] of Touati et al.
    """
    logits = temperature * reward.to(B.dtype)
    if weight is not None:
        logits = logits + torch.log(weight.to(B.dtype))
    w = torch.softmax(logits, dim=0)
    return (w * reward.to(B.dtype)) @ B
