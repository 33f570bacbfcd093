"""Tests of algorithms/fb/losses.py: the FB successor-measure loss, the orthonormality loss, latents and
task inference, against explicit loops (fb.md §2.1, §2.3, §3, §9.2) and the closed-form tabular fixed
points of suites/didactic/ground_truth.py (fb.md §1, §4.2)."""
from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from algorithms.fb import losses
from suites.didactic import cmp as cmp_mod
from suites.didactic import ground_truth as gt

GAMMA = 0.9
N = 7
E = 2
D_LAT = 4
DT = torch.float64


# ----------------------------------------------------------------------------------------------------
# helpers: explicit Python loops written from the reference formulas (fb.md §2.1 [CA], §2.3/§3 [OS])
# ----------------------------------------------------------------------------------------------------

def _random_batch(seed: int, n: int = N, heads: int = E, d: int = D_LAT):
    g = torch.Generator().manual_seed(seed)
    F = torch.randn(heads, n, d, generator=g, dtype=DT)
    B = torch.randn(n, d, generator=g, dtype=DT)
    M = F @ B.T                                                  # [E, N, N]
    T = torch.randn(n, n, generator=g, dtype=DT)
    return F, B, M, T


def _loop_minibatch(M: np.ndarray, T: np.ndarray, gamma: float, convention: str) -> tuple[float, float]:
    """(offdiag, diag) of the reference minibatch estimator, by explicit loops over i != j."""
    heads, n, _ = M.shape
    off_per_head, diag_per_head = [], []
    for e in range(heads):
        if convention == "touati":
            # 0.5 * mean_{i != j} (M_e - gamma T)_ij^2
            s = 0.0
            for i in range(n):
                for j in range(n):
                    if i != j:
                        s += (M[e, i, j] - gamma * T[i, j]) ** 2
            off_per_head.append(0.5 * s / (n * (n - 1)))
            diag_per_head.append(-sum(M[e, i, i] for i in range(n)) / n)
        else:
            # mean_i 0.5 * sum_{j != i} (M_e - gamma T)_ij^2 / (N - 1)
            row_terms = []
            for i in range(n):
                s = 0.0
                for j in range(n):
                    if j != i:
                        s += (M[e, i, j] - gamma * T[i, j]) ** 2
                row_terms.append(0.5 * s / (n - 1))
            off_per_head.append(sum(row_terms) / n)
            diag_per_head.append(sum(M[e, i, i] for i in range(n)))
    if convention == "touati":
        return sum(off_per_head), sum(diag_per_head)                                  # summed over heads
    offdiag = sum(off_per_head) / heads                                              # averaged over heads
    diag = -(1.0 - gamma) * sum(diag_per_head) / (heads * n)                          # mean_{e,i}
    return offdiag, diag


def _loop_weighted(M: np.ndarray, T: np.ndarray, p: np.ndarray, gamma: float, convention: str
                   ) -> tuple[float, float]:
    """(offdiag, diag) of the population loss over a weighted support: diagonal INCLUDED in the pairs."""
    heads, n, _ = M.shape
    c = 1.0 if convention == "touati" else (1.0 - gamma)
    offs, diags = [], []
    for e in range(heads):
        s = 0.0
        for i in range(n):
            for j in range(n):
                s += p[i] * p[j] * (M[e, i, j] - gamma * T[i, j]) ** 2
        offs.append(0.5 * s)
        diags.append(-c * sum(p[i] * M[e, i, i] for i in range(n)))
    if convention == "touati":
        return sum(offs), sum(diags)
    return sum(offs) / heads, sum(diags) / heads


def _loop_ortho(B: np.ndarray, convention: str) -> float:
    n = B.shape[0]
    C = B @ B.T
    off = 0.0
    for i in range(n):
        for j in range(n):
            if i != j:
                off += C[i, j] ** 2
    off /= n * (n - 1)
    diag = sum(C[i, i] for i in range(n)) / n
    if convention == "touati":
        return off - 2.0 * diag
    return 0.5 * off - diag


# ----------------------------------------------------------------------------------------------------
# 1. minibatch estimator vs explicit loops
# ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("convention", losses.CONVENTIONS)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_successor_loss_matches_double_loop(convention, seed):
    _, _, M, T = _random_batch(seed)
    loss, parts = losses.successor_loss(M, T, GAMMA, convention)
    off_ref, diag_ref = _loop_minibatch(M.numpy(), T.numpy(), GAMMA, convention)
    assert parts["offdiag"].item() == pytest.approx(off_ref, rel=1e-12, abs=1e-12)
    assert parts["diag"].item() == pytest.approx(diag_ref, rel=1e-12, abs=1e-12)
    assert loss.item() == pytest.approx(off_ref + diag_ref, rel=1e-12, abs=1e-12)
    assert loss.dtype == DT


def test_conventions_differ_by_their_constants():
    """Touati sums heads and has no (1-gamma); Zheng averages heads and weights the diagonal by (1-gamma).
    On the same inputs: off_T = E * off_Z, diag_T = E / (1-gamma) * diag_Z."""
    _, _, M, T = _random_batch(5)
    _, pt = losses.successor_loss(M, T, GAMMA, "touati")
    _, pz = losses.successor_loss(M, T, GAMMA, "zheng")
    assert pt["offdiag"].item() == pytest.approx(E * pz["offdiag"].item(), rel=1e-12)
    assert pt["diag"].item() == pytest.approx(E / (1 - GAMMA) * pz["diag"].item(), rel=1e-12)


@pytest.mark.parametrize("convention", losses.CONVENTIONS)
def test_successor_loss_leading_dims_are_averaged(convention):
    K = 3
    g = torch.Generator().manual_seed(11)
    M = torch.randn(K, E, N, N, generator=g, dtype=DT)
    T = torch.randn(K, N, N, generator=g, dtype=DT)
    loss, parts = losses.successor_loss(M, T, GAMMA, convention)
    per_k = [_loop_minibatch(M[k].numpy(), T[k].numpy(), GAMMA, convention) for k in range(K)]
    off_ref = sum(o for o, _ in per_k) / K
    diag_ref = sum(d for _, d in per_k) / K
    assert parts["offdiag"].item() == pytest.approx(off_ref, rel=1e-12, abs=1e-12)
    assert parts["diag"].item() == pytest.approx(diag_ref, rel=1e-12, abs=1e-12)
    assert loss.item() == pytest.approx(off_ref + diag_ref, rel=1e-12, abs=1e-12)
    # Each k really uses its own target: a shared target gives a different value.
    loss_shared, _ = losses.successor_loss(M, T[0].expand(K, N, N), GAMMA, convention)
    assert abs(loss_shared.item() - loss.item()) > 1e-3


@pytest.mark.parametrize("convention", losses.CONVENTIONS)
def test_minibatch_ignores_target_diagonal_but_weighted_does_not(convention):
    _, _, M, T = _random_batch(3)
    T2 = T + torch.diag(torch.arange(1.0, N + 1, dtype=DT))
    a, _ = losses.successor_loss(M, T, GAMMA, convention)
    b, _ = losses.successor_loss(M, T2, GAMMA, convention)
    assert a.item() == pytest.approx(b.item(), rel=1e-13, abs=1e-13)
    p = torch.full((N,), 1.0 / N, dtype=DT)
    a, _ = losses.successor_loss(M, T, GAMMA, convention, weight=p)
    b, _ = losses.successor_loss(M, T2, GAMMA, convention, weight=p)
    assert abs(a.item() - b.item()) > 1e-3


@pytest.mark.parametrize("convention", losses.CONVENTIONS)
def test_target_is_stop_gradient_and_gradient_reaches_F_and_B(convention):
    F, B, _, T = _random_batch(4)
    F.requires_grad_(True)
    B.requires_grad_(True)
    T.requires_grad_(True)
    loss, _ = losses.successor_loss(F @ B.T, T, GAMMA, convention)
    loss.backward()
    assert T.grad is None
    assert F.grad is not None and F.grad.abs().max() > 0
    assert B.grad is not None and B.grad.abs().max() > 0
    # gradient w.r.t. M equals the derivative of the loop formula (finite differences on the loop)
    M0 = (F @ B.T).detach().clone().requires_grad_(True)
    loss, _ = losses.successor_loss(M0, T.detach(), GAMMA, convention)
    (grad,) = torch.autograd.grad(loss, M0)
    Mn, Tn = M0.detach().numpy().copy(), T.detach().numpy()
    h = 1e-6
    for (e, i, j) in [(0, 0, 0), (1, 2, 5), (0, 6, 1), (1, 3, 3)]:
        Mp, Mm = Mn.copy(), Mn.copy()
        Mp[e, i, j] += h
        Mm[e, i, j] -= h
        fd = (sum(_loop_minibatch(Mp, Tn, GAMMA, convention)) - sum(_loop_minibatch(Mm, Tn, GAMMA, convention))) / (2 * h)
        assert grad[e, i, j].item() == pytest.approx(fd, rel=1e-6, abs=1e-8)


def test_unknown_convention_raises():
    _, B, M, T = _random_batch(0)
    with pytest.raises(ValueError):
        losses.successor_loss(M, T, GAMMA, "meta")
    with pytest.raises(ValueError):
        losses.orthonormality_loss(B, "meta")


# ----------------------------------------------------------------------------------------------------
# 2. orthonormality
# ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("convention", losses.CONVENTIONS)
@pytest.mark.parametrize("seed", [0, 1])
def test_orthonormality_matches_double_loop(convention, seed):
    _, B, _, _ = _random_batch(seed)
    val = losses.orthonormality_loss(B, convention)
    assert val.item() == pytest.approx(_loop_ortho(B.numpy(), convention), rel=1e-12, abs=1e-12)


def test_orthonormality_zheng_is_half_touati():
    _, B, _, _ = _random_batch(9)
    t = losses.orthonormality_loss(B, "touati").item()
    z = losses.orthonormality_loss(B, "zheng").item()
    assert z == pytest.approx(0.5 * t, rel=1e-12)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_weighted_orthonormality_is_frobenius_distance_minus_d(seed):
    g = torch.Generator().manual_seed(100 + seed)
    B = torch.randn(N, D_LAT, generator=g, dtype=DT)
    p = torch.rand(N, generator=g, dtype=DT) + 0.05
    p = p / p.sum()
    cov = B.T @ torch.diag(p) @ B
    frob = ((cov - torch.eye(D_LAT, dtype=DT)) ** 2).sum().item()
    t = losses.orthonormality_loss(B, "touati", weight=p).item()
    z = losses.orthonormality_loss(B, "zheng", weight=p).item()
    assert t == pytest.approx(frob - D_LAT, rel=1e-12, abs=1e-12)
    assert z == pytest.approx(0.5 * (frob - D_LAT), rel=1e-12, abs=1e-12)
    # an orthonormal (w.r.t. diag(p)) B reaches the minimum -d (Touati) / -d/2 (Zheng)
    Q, _ = torch.linalg.qr(torch.sqrt(p)[:, None] * B)       # sqrt(p) B_ortho = Q  =>  B_ortho^T diag(p) B_ortho = I
    B_ortho = Q / torch.sqrt(p)[:, None]
    assert losses.orthonormality_loss(B_ortho, "touati", weight=p).item() == pytest.approx(-D_LAT, abs=1e-10)
    assert losses.orthonormality_loss(B_ortho, "zheng", weight=p).item() == pytest.approx(-D_LAT / 2, abs=1e-10)


@pytest.mark.parametrize("convention", losses.CONVENTIONS)
def test_minibatch_orthonormality_is_unbiased(convention):
    """Exact expectation over all K^n i.i.d. minibatches drawn from a K-point population with
    probabilities p equals the weighted (population) value: the i != j estimator is unbiased."""
    K, n = 3, 3
    g = torch.Generator().manual_seed(7)
    Bpop = torch.randn(K, D_LAT, generator=g, dtype=DT)
    p = torch.tensor([0.5, 0.3, 0.2], dtype=DT)
    expect = 0.0
    for idx in itertools.product(range(K), repeat=n):
        prob = float(np.prod([p[a].item() for a in idx]))
        expect += prob * losses.orthonormality_loss(Bpop[list(idx)], convention).item()
    pop = losses.orthonormality_loss(Bpop, convention, weight=p).item()
    assert expect == pytest.approx(pop, rel=1e-12, abs=1e-12)


# ----------------------------------------------------------------------------------------------------
# 3. weighted (population) mode
# ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("convention", losses.CONVENTIONS)
@pytest.mark.parametrize("seed", [0, 1])
def test_weighted_successor_loss_matches_loops(convention, seed):
    _, _, M, T = _random_batch(seed)
    g = torch.Generator().manual_seed(50 + seed)
    p = torch.rand(N, generator=g, dtype=DT) + 0.05
    p = p / p.sum()
    loss, parts = losses.successor_loss(M, T, GAMMA, convention, weight=p)
    off_ref, diag_ref = _loop_weighted(M.numpy(), T.numpy(), p.numpy(), GAMMA, convention)
    assert parts["offdiag"].item() == pytest.approx(off_ref, rel=1e-12, abs=1e-12)
    assert parts["diag"].item() == pytest.approx(diag_ref, rel=1e-12, abs=1e-12)
    assert loss.item() == pytest.approx(off_ref + diag_ref, rel=1e-12, abs=1e-12)


@pytest.mark.parametrize("convention", losses.CONVENTIONS)
def test_minibatch_successor_loss_is_unbiased_for_weighted_loss(convention):
    """E over i.i.d. minibatches (rows and goals from the same draws) of the i != j estimator equals
    the population loss with pair weights p_a p_b (diagonal included), enumerated exactly."""
    K, n = 3, 3
    g = torch.Generator().manual_seed(8)
    Mpop = torch.randn(E, K, K, generator=g, dtype=DT)
    Tpop = torch.randn(K, K, generator=g, dtype=DT)
    p = torch.tensor([0.2, 0.45, 0.35], dtype=DT)
    expect = 0.0
    for idx in itertools.product(range(K), repeat=n):
        ii = torch.tensor(idx)
        prob = float(np.prod([p[a].item() for a in idx]))
        val, _ = losses.successor_loss(Mpop[:, ii][:, :, ii], Tpop[ii][:, ii], GAMMA, convention)
        expect += prob * val.item()
    pop, _ = losses.successor_loss(Mpop, Tpop, GAMMA, convention, weight=p)
    assert expect == pytest.approx(pop.item(), rel=1e-12, abs=1e-12)


# ----------------------------------------------------------------------------------------------------
# 4. the closed-form tabular fixed points are stationary points of the population loss
# ----------------------------------------------------------------------------------------------------

CMPS = [cmp_mod.three_state, cmp_mod.five_state]


@pytest.mark.parametrize("make_cmp", CMPS)
def test_zheng_fixed_point_is_stationary(make_cmp):
    cmp = make_cmp()
    gamma = cmp.gamma
    D = torch.tensor(cmp.data_distribution, dtype=DT)
    Pb = torch.tensor(gt.policy_transition(cmp, cmp.beta), dtype=DT)
    m_star = torch.tensor(gt.successor_ratio_zheng(cmp), dtype=DT)
    target = Pb @ m_star

    # sanity: m_star solves m = gamma P^beta m + (1 - gamma) diag(D)^{-1}
    assert torch.allclose(m_star, gamma * target + (1 - gamma) * torch.diag(1.0 / D), atol=1e-10)

    m = m_star.clone().requires_grad_(True)
    loss, _ = losses.successor_loss(m[None], target, gamma, "zheng", weight=D)
    (grad,) = torch.autograd.grad(loss, m)
    assert grad.abs().max().item() < 1e-10

    # perturbed m: gradient is exactly D_i D_j delta_ij (target fixed), clearly non-zero
    delta = 0.1 * torch.randn(m_star.shape, generator=torch.Generator().manual_seed(0), dtype=DT)
    m2 = (m_star + delta).requires_grad_(True)
    loss2, _ = losses.successor_loss(m2[None], target, gamma, "zheng", weight=D)
    (grad2,) = torch.autograd.grad(loss2, m2)
    assert grad2.abs().max().item() > 1e-4
    assert torch.allclose(grad2, torch.outer(D, D) * delta, atol=1e-12)
    assert loss2.item() > loss.item()

    # two identical heads (averaged) keep the stationarity
    m3 = m_star.clone().requires_grad_(True)
    loss3, _ = losses.successor_loss(torch.stack([m3, m3]), target, gamma, "zheng", weight=D)
    (grad3,) = torch.autograd.grad(loss3, m3)
    assert grad3.abs().max().item() < 1e-10

    # The Touati constants (no (1 - gamma)) do NOT have M^beta D^-1 as their fixed point.
    m4 = m_star.clone().requires_grad_(True)
    loss4, _ = losses.successor_loss(m4[None], target, gamma, "touati", weight=D)
    (grad4,) = torch.autograd.grad(loss4, m4)
    assert torch.allclose(grad4, -gamma * torch.diag(D), atol=1e-12)


def _touati_support(cmp):
    """Support rows r = (x, s') with p_r = D(x) P(s'|x) > 0."""
    S = cmp.n_states
    D = cmp.data_distribution
    Px = cmp.P.reshape(-1, S)
    xs, gs, ps = [], [], []
    for x in range(Px.shape[0]):
        for s in range(S):
            pr = D[x] * Px[x, s]
            if pr > 0:
                xs.append(x)
                gs.append(s)
                ps.append(pr)
    return torch.tensor(xs), torch.tensor(gs), torch.tensor(ps, dtype=DT)


def _touati_loss_via_api(m, target_full, cmp, xs, gs, p):
    M = m[xs][:, gs]                     # M[r, r'] = m[x_r, s'_{r'}]
    T = target_full[xs][:, gs]
    return losses.successor_loss(M[None], T, cmp.gamma, "touati", weight=p)[0]


@pytest.mark.parametrize("make_cmp", CMPS)
def test_touati_fixed_point_is_stationary(make_cmp):
    cmp = make_cmp()
    gamma = cmp.gamma
    S = cmp.n_states
    Dn = cmp.data_distribution
    rho_next = cmp.next_state_distribution
    Px = torch.tensor(cmp.P.reshape(-1, S), dtype=DT)
    D = torch.tensor(Dn, dtype=DT)
    rho = torch.tensor(rho_next, dtype=DT)
    Pb = torch.tensor(gt.policy_transition(cmp, cmp.beta), dtype=DT)
    ratio, seen = gt.successor_ratio_touati(cmp, cmp.beta)
    assert seen.all()                                  # every state is a next state in both CMPs
    m_star = torch.tensor(ratio, dtype=DT)             # [n, S]
    target_full = Pb @ m_star                          # (P^beta m_star)(x, s')
    xs, gs, p = _touati_support(cmp)
    assert p.sum().item() == pytest.approx(1.0, abs=1e-12)

    # sanity: m_star solves m = P / rho_next + gamma P^beta m
    assert torch.allclose(m_star, Px / rho[None] + gamma * target_full, atol=1e-10)

    # The gathered support loss equals the exact population loss over (x, s'):
    #   0.5 sum_{x,g} D(x) rho_next(g) (m - gamma T)^2 - sum_{x,g} D(x) P(g|x) m(x, g)
    m_rand = m_star + torch.randn(m_star.shape, generator=torch.Generator().manual_seed(1), dtype=DT)
    direct = (0.5 * (D[:, None] * rho[None] * (m_rand - gamma * target_full) ** 2).sum()
              - (D[:, None] * Px * m_rand).sum())
    via_api = _touati_loss_via_api(m_rand, target_full, cmp, xs, gs, p)
    assert via_api.item() == pytest.approx(direct.item(), rel=1e-12, abs=1e-12)

    m = m_star.clone().requires_grad_(True)
    loss = _touati_loss_via_api(m, target_full, cmp, xs, gs, p)
    (grad,) = torch.autograd.grad(loss, m)
    assert grad.abs().max().item() < 1e-10

    delta = 0.1 * torch.randn(m_star.shape, generator=torch.Generator().manual_seed(2), dtype=DT)
    m2 = (m_star + delta).requires_grad_(True)
    loss2 = _touati_loss_via_api(m2, target_full, cmp, xs, gs, p)
    (grad2,) = torch.autograd.grad(loss2, m2)
    assert grad2.abs().max().item() > 1e-4
    assert torch.allclose(grad2, D[:, None] * rho[None] * delta, atol=1e-12)
    assert loss2.item() > loss.item()


# ----------------------------------------------------------------------------------------------------
# 5. task inference, sphere projection, latent sampling
# ----------------------------------------------------------------------------------------------------

def _inference_data(seed: int = 0, n: int = 9, d: int = D_LAT):
    g = torch.Generator().manual_seed(seed)
    B = torch.randn(n, d, generator=g, dtype=DT)
    r = torch.randn(n, generator=g, dtype=DT)
    p = torch.rand(n, generator=g, dtype=DT) + 0.1
    return B, r, p


def test_infer_task_vector_plain_mean():
    B, r, _ = _inference_data()
    z = losses.infer_task_vector(B, r)
    expected = sum(r[i].item() * B[i] for i in range(B.shape[0])) / B.shape[0]
    assert torch.allclose(z, expected, rtol=1e-12, atol=1e-12)


def test_infer_task_vector_weighted():
    B, r, p = _inference_data(1)
    z = losses.infer_task_vector(B, r, weight=p)
    expected = sum(p[i].item() * r[i].item() * B[i] for i in range(B.shape[0])) / p.sum().item()
    assert torch.allclose(z, expected, rtol=1e-12, atol=1e-12)
    # a zero weight drops the sample
    p0 = p.clone()
    p0[0] = 0.0
    z0 = losses.infer_task_vector(B, r, weight=p0)
    expected0 = sum(p0[i].item() * r[i].item() * B[i] for i in range(1, B.shape[0])) / p0.sum().item()
    assert torch.allclose(z0, expected0, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("temperature", [0.5, 3.0])
@pytest.mark.parametrize("weighted", [False, True])
def test_infer_task_vector_temperature(temperature, weighted):
    B, r, p = _inference_data(2)
    n = B.shape[0]
    weight = p if weighted else None
    z = losses.infer_task_vector(B, r, weight=weight, temperature=temperature)
    # manual softmax(T r + log p)
    base = p.numpy() if weighted else np.ones(n)
    un = np.array([math.exp(temperature * r[i].item()) * base[i] for i in range(n)])
    w = un / un.sum()
    expected = sum(w[i] * r[i].item() * B[i] for i in range(n))
    assert torch.allclose(z, expected, rtol=1e-12, atol=1e-12)
    # recover the implied weights with B = I: z_i = w_i r_i; they sum to 1 and match the manual ones
    implied = losses.infer_task_vector(torch.eye(n, dtype=DT), r, weight=weight, temperature=temperature) / r
    assert implied.sum().item() == pytest.approx(1.0, abs=1e-12)
    assert np.allclose(implied.numpy(), w, rtol=1e-12, atol=1e-14)
    # temperature actually emphasises high rewards
    assert implied[r.argmax()].item() > implied[r.argmin()].item()


def test_project_to_sphere_norm_and_direction():
    g = torch.Generator().manual_seed(3)
    for d in (1, 4, 50):
        z = torch.randn(6, d, generator=g, dtype=DT) * 7.0
        pz = losses.project_to_sphere(z)
        assert torch.allclose(pz.norm(dim=-1), torch.full((6,), math.sqrt(d), dtype=DT), atol=1e-12)
        # same direction (positive multiple)
        cos = (pz * z).sum(-1) / (pz.norm(dim=-1) * z.norm(dim=-1))
        assert torch.allclose(cos, torch.ones(6, dtype=DT), atol=1e-12)


def _is_goal_row(rows: torch.Tensor, goals: torch.Tensor, atol: float = 1e-6) -> torch.Tensor:
    """[n] bool: row equals some projected goal embedding."""
    proj = losses.project_to_sphere(goals)
    dist = torch.cdist(rows.to(DT), proj.to(DT))
    return (dist < atol).any(dim=1)


def test_sample_latents_norm_and_mixing():
    d, n = 8, 64
    goals = torch.randn(5, d, generator=torch.Generator().manual_seed(0)) * 3.0
    for mix in (0.0, 0.5, 1.0):
        z = losses.sample_latents(n, d, torch.Generator().manual_seed(1), mix, goals)
        assert z.shape == (n, d)
        assert torch.allclose(z.norm(dim=-1), torch.full((n,), math.sqrt(d)), atol=1e-4)
    z1 = losses.sample_latents(n, d, torch.Generator().manual_seed(1), 1.0, goals)
    assert _is_goal_row(z1, goals).all()
    z0 = losses.sample_latents(n, d, torch.Generator().manual_seed(1), 0.0, goals)
    assert not _is_goal_row(z0, goals).any()
    # without goal embeddings, mix_ratio is irrelevant and the rows are Gaussian directions
    zn = losses.sample_latents(n, d, torch.Generator().manual_seed(1), 1.0, None)
    assert not _is_goal_row(zn, goals).any()
    # mix_ratio=0.5: roughly half the rows are goals (seeded, n large)
    big = losses.sample_latents(4000, d, torch.Generator().manual_seed(2), 0.5, goals)
    frac = _is_goal_row(big, goals).double().mean().item()
    assert 0.45 < frac < 0.55


def test_sample_latents_goal_weight_and_seed():
    d, n = 6, 200
    goals = torch.randn(4, d, generator=torch.Generator().manual_seed(5))
    onehot = torch.tensor([0.0, 0.0, 1.0, 0.0])
    z = losses.sample_latents(n, d, torch.Generator().manual_seed(3), 1.0, goals, goal_weight=onehot)
    assert torch.allclose(z, losses.project_to_sphere(goals[2]).expand(n, d), atol=1e-6)
    # uniform goal weight: every goal gets picked
    z = losses.sample_latents(n, d, torch.Generator().manual_seed(3), 1.0, goals)
    proj = losses.project_to_sphere(goals)
    picked = torch.cdist(z, proj).argmin(dim=1)
    assert set(picked.tolist()) == {0, 1, 2, 3}
    # same seed -> identical, different seed -> different
    a = losses.sample_latents(n, d, torch.Generator().manual_seed(9), 0.5, goals)
    b = losses.sample_latents(n, d, torch.Generator().manual_seed(9), 0.5, goals)
    c = losses.sample_latents(n, d, torch.Generator().manual_seed(10), 0.5, goals)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    a64 = losses.sample_latents(n, d, torch.Generator().manual_seed(9), 0.5, goals, dtype=DT)
    assert a64.dtype == DT
