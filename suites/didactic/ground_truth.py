"""Exact ground truth for a CMP, in closed form (fb.md §4.2).  numpy only.

Index state-action pairs as x = s * A + a (n = S * A).  For a reward on states r(s'), both FB
conventions estimate the same action value (rewards counted from the next state):

    Q^pi_r(x) = E[ sum_{t>=0} gamma^t r(s_{t+1}) | x_0 = x, pi ].

Zheng convention (one-step FB, behaviour policy beta), over pairs x -> x+:
    P^beta[x, x+] = P(s+|x) beta(a+|s+),   M^beta = (1 - gamma) (I - gamma P^beta)^{-1},
    F B^T = M^beta diag(D)^{-1},           Q^beta_r = (I - gamma P^beta)^{-1} r~,
where D(x) = rho(s) beta(a|s) and r~(x) = sum_s' P(s'|x) r(s') (the reward of the next state, paired
with (s, a) as in the reference's data shift), so F(x)^T z_r = (1 - gamma) Q^beta_r(x).

Touati convention (FB, policy pi), over pairs x -> next state s':
    M^pi(x, s') = sum_{t>=0} gamma^t P(s_{t+1} = s' | x, pi) = [(I - gamma P^pi)^{-1} P](x, s'),
    F(x, z)^T B(s') = M^pi(x, s') / rho_next(s'),    Q_r(x) = F(x, z_r)^T z_r,
where rho_next is the data's next-state marginal.  Ground truth uses pi = pi*_r, the optimal policy
for r from value iteration.
"""
from __future__ import annotations

import numpy as np

from suites.didactic.cmp import CMP

__all__ = [
    "policy_transition", "successor_measure_zheng", "successor_ratio_zheng", "expected_next_reward",
    "q_policy", "q_optimal", "greedy_policy", "successor_ratio_touati", "boltzmann", "forward_kl",
    "unique_argmax_mask",
]


def policy_transition(cmp: CMP, policy: np.ndarray) -> np.ndarray:
    """P^pi[x, x+] = P(s+ | x) pi(a+ | s+), shape [n, n]; `policy` is [S, A]."""
    S, A = cmp.n_states, cmp.n_actions
    return np.einsum("xt,tb->xtb", cmp.P.reshape(S * A, S), policy).reshape(S * A, S * A)


def successor_measure_zheng(cmp: CMP) -> np.ndarray:
    """M^beta = (1 - gamma)(I - gamma P^beta)^{-1}, normalised and counting t = 0; rows sum to 1."""
    n = cmp.n_states * cmp.n_actions
    return (1 - cmp.gamma) * np.linalg.inv(np.eye(n) - cmp.gamma * policy_transition(cmp, cmp.beta))


def successor_ratio_zheng(cmp: CMP) -> np.ndarray:
    """The fixed point of the one-step FB loss: M^beta diag(D)^{-1}, shape [n, n]."""
    return successor_measure_zheng(cmp) / cmp.data_distribution[None, :]


def expected_next_reward(cmp: CMP, reward: np.ndarray) -> np.ndarray:
    """r~(x) = sum_s' P(s'|x) r(s'), shape [n]."""
    return cmp.P.reshape(-1, cmp.n_states) @ reward


def q_policy(cmp: CMP, reward: np.ndarray, policy: np.ndarray) -> np.ndarray:
    """Q^pi_r = (I - gamma P^pi)^{-1} r~, shape [n]."""
    n = cmp.n_states * cmp.n_actions
    return np.linalg.solve(np.eye(n) - cmp.gamma * policy_transition(cmp, policy),
                           expected_next_reward(cmp, reward))


def q_optimal(cmp: CMP, reward: np.ndarray, tol: float = 1e-13, max_iter: int = 100_000) -> np.ndarray:
    """Q*_r by value iteration (then one exact policy evaluation of its greedy policy), shape [n]."""
    S, A = cmp.n_states, cmp.n_actions
    P = cmp.P.reshape(S * A, S)
    r_next = expected_next_reward(cmp, reward)
    q = np.zeros(S * A)
    for _ in range(max_iter):
        q_new = r_next + cmp.gamma * P @ q.reshape(S, A).max(1)
        if np.max(np.abs(q_new - q)) < tol:
            q = q_new
            break
        q = q_new
    # Polish: evaluate the greedy policy exactly so Q* carries no value-iteration residual.
    return q_policy(cmp, reward, greedy_policy(q.reshape(S, A)))


def greedy_policy(q: np.ndarray) -> np.ndarray:
    """One-hot argmax policy [S, A] from Q values [S, A] (first index on ties)."""
    pi = np.zeros_like(q)
    pi[np.arange(q.shape[0]), q.argmax(1)] = 1.0
    return pi


def successor_ratio_touati(cmp: CMP, policy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """M^pi(x, s') / rho_next(s'), shape [n, S], and the mask of columns with rho_next > 0."""
    S, A = cmp.n_states, cmp.n_actions
    n = S * A
    M = np.linalg.solve(np.eye(n) - cmp.gamma * policy_transition(cmp, policy), cmp.P.reshape(n, S))
    rho_next = cmp.next_state_distribution
    seen = rho_next > 0
    ratio = np.zeros_like(M)
    ratio[:, seen] = M[:, seen] / rho_next[seen]
    return ratio, seen


def boltzmann(q: np.ndarray) -> np.ndarray:
    """softmax over the last axis (temperature 1)."""
    z = q - q.max(-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(-1, keepdims=True)


def forward_kl(q_true: np.ndarray, q_pred: np.ndarray) -> float:
    """mean_s KL(softmax(Q_true(s,.)) || softmax(Q_pred(s,.))); inputs [S, A]."""
    log_p = q_true - q_true.max(-1, keepdims=True)
    log_p = log_p - np.log(np.exp(log_p).sum(-1, keepdims=True))
    log_q = q_pred - q_pred.max(-1, keepdims=True)
    log_q = log_q - np.log(np.exp(log_q).sum(-1, keepdims=True))
    return float(np.mean(np.sum(np.exp(log_p) * (log_p - log_q), -1)))


def unique_argmax_mask(q: np.ndarray, rel_tol: float = 1e-9) -> np.ndarray:
    """States [S] whose best action is unique (gap to the runner-up above rel_tol * scale)."""
    if q.shape[1] < 2:
        return np.ones(q.shape[0], dtype=bool)
    top2 = np.sort(q, axis=1)[:, -2:]
    scale = max(1.0, float(np.max(np.abs(q))))
    return (top2[:, 1] - top2[:, 0]) > rel_tol * scale
