"""Didactic suite: ground-truth closed forms against brute force, and one-step FB converging to them."""
import dataclasses

import numpy as np
import pytest
import torch

from algorithms.fb import onestep_fb
from benchmarks.config import load_experiment
from suites import registry
from suites.didactic import ground_truth as gt
from suites.didactic.cmp import five_state, load_cmp, three_state
from suites.didactic import EXAMPLE_CMP

from fixtures import MemoryWriter

CMPS = {"three-state": three_state(), "five-state": five_state(), "four-state-chain": load_cmp(EXAMPLE_CMP)}


def _rollout_expectation(cmp, policy, start_x, horizon):
    """Exact finite-horizon state-action distributions by forward propagation (no matrix inverse)."""
    n = cmp.n_states * cmp.n_actions
    dist = np.zeros(n)
    dist[start_x] = 1.0
    P = gt.policy_transition(cmp, policy)
    for _ in range(horizon):
        yield dist
        dist = dist @ P


@pytest.mark.parametrize("name", CMPS)
def test_behaviour_successor_measure_matches_discounted_rollouts(name):
    cmp = CMPS[name]
    n = cmp.n_states * cmp.n_actions
    M = gt.successor_measure_zheng(cmp)
    np.testing.assert_allclose(M.sum(1), 1.0, atol=1e-12)
    for x in range(n):
        series = sum((1 - cmp.gamma) * cmp.gamma ** t * d
                     for t, d in enumerate(_rollout_expectation(cmp, cmp.beta, x, 600)))
        np.testing.assert_allclose(M[x], series, atol=1e-12)


@pytest.mark.parametrize("name", CMPS)
def test_q_values_match_reward_sums_and_bellman_optimality(name):
    cmp = CMPS[name]
    rng = np.random.default_rng(0)
    r = rng.uniform(size=cmp.n_states)
    S, A = cmp.n_states, cmp.n_actions
    P = cmp.P.reshape(S * A, S)
    # Q^beta(x) = sum_t gamma^t E[r(s_{t+1})]
    q_beta = gt.q_policy(cmp, r, cmp.beta)
    series = np.array([sum(cmp.gamma ** t * (d @ P @ r) for t, d in enumerate(_rollout_expectation(cmp, cmp.beta, x, 600)))
                       for x in range(S * A)])
    np.testing.assert_allclose(q_beta, series, atol=1e-10)
    # Q* satisfies the Bellman optimality equation and dominates Q^beta
    q_star = gt.q_optimal(cmp, r)
    np.testing.assert_allclose(q_star, P @ (r + cmp.gamma * q_star.reshape(S, A).max(1)), atol=1e-10)
    assert np.all(q_star >= q_beta - 1e-10)
    # Zheng: F^T z_r = (1 - gamma) Q^beta_r with the exact ratio and z_r = E_D[r~ B]; check via M^beta
    np.testing.assert_allclose(gt.successor_measure_zheng(cmp) @ gt.expected_next_reward(cmp, r),
                               (1 - cmp.gamma) * q_beta, atol=1e-10)


@pytest.mark.parametrize("name", CMPS)
def test_touati_successor_ratio_recovers_q(name):
    cmp = CMPS[name]
    r = np.random.default_rng(1).uniform(size=cmp.n_states)
    q_star = gt.q_optimal(cmp, r)
    ratio, seen = gt.successor_ratio_touati(cmp, gt.greedy_policy(q_star.reshape(cmp.n_states, cmp.n_actions)))
    rho = cmp.next_state_distribution
    # Q_r(x) = sum_s' M(x, s') r(s') = E_{s' ~ rho}[ (M/rho)(x, s') r(s') ]
    np.testing.assert_allclose(ratio[:, seen] @ (rho[seen] * r[seen]), q_star, atol=1e-10)


def test_three_state_structure():
    cmp = CMPS["three-state"]
    assert cmp.P[0, 2, 2] == 1 and cmp.P[1, 0, 1] == 1 and cmp.P[2, 1, 2] == 1
    five = CMPS["five-state"]
    assert five.P[4, 0, 0] == 1 and five.P[0, 1, 4] == pytest.approx(0.7) and five.P[0, 1, 0] == pytest.approx(0.3)


def test_kl_and_argmax_helpers():
    q = np.array([[1.0, 2.0], [3.0, 3.0]])
    assert gt.forward_kl(q, q) == pytest.approx(0.0, abs=1e-15)
    assert gt.forward_kl(q, q + np.array([[0.0, 1.0], [0.0, 0.0]])) > 0
    np.testing.assert_array_equal(gt.unique_argmax_mask(q), [True, False])


@pytest.mark.parametrize("task_id", ["didactic/three-state-v0", "didactic/five-state-v0"])
def test_onestep_fb_reaches_exact_ground_truth_at_tiny_size(task_id):
    """Acceptance: at the tiny size, one-step FB's M/rho and Q errors are <= 1e-6 on both CMPs, and its
    greedy policy equals argmax Q^beta_r for every random reward."""
    trial = next(t for t in load_experiment("didactic", "tiny").trials()
                 if t.algorithm == "onestep_fb" and t.task_id == task_id)
    cfg = onestep_fb.Config(**{k: tuple(v) if isinstance(v, list) else v for k, v in trial.algo_config.items()})
    cfg = dataclasses.replace(cfg, eval_every=cfg.num_steps)
    task = registry.get(task_id).make()
    torch.set_num_threads(1)
    rec = MemoryWriter()
    onestep_fb.run(task, cfg, rec)
    final = rec.eval[cfg.num_steps]
    assert final["successor_error"] <= 1e-6
    assert final["q_error"] <= 1e-6
    assert final["greedy_match"] == 1.0
    assert all(row["greedy_match"] == 1.0 for row in rec.samples)
    assert len(rec.samples) == len(task.eval_rewards)
    # it really learned: the initial errors were many orders of magnitude larger
    assert rec.eval[0]["successor_error"] > 1e-2 and rec.eval[0]["q_error"] > 1e-1
