"""The didactic task object: reward-free data from a CMP and evaluation against exact ground truth.

Inputs are one-hot: obs = onehot(s) in R^S, action = onehot(a) in R^A.

Data (`batch` kwarg):
  "exact"   every step sees the whole support {(s, a, s', a') : p > 0} with its probability
            p = rho(s) beta(a|s) P(s'|s,a) beta(a'|s'), so the losses are their exact population
            expectations (the setting of fb.md §4.3, where one-step FB reaches ~1e-8);
  "sampled" i.i.d. minibatches of that distribution, with the reference code's estimators.

Evaluation: `n_eval_rewards` random state rewards r ~ U[0, 1]^S drawn from `reward_seed` (the same
rewards for every algorithm and seed).  For each reward the agent infers z from the data (the
weighted support, i.e. the exact expectation), then these are compared with ground truth:
  successor_error  MSE of the predicted M/rho against the exact one (FB: M^{pi*_r}/rho_next over
                   observed next states; one-step FB: M^beta D^-1 over all pairs),
  successor_rel_error  the same squared error divided by the squared norm of the exact M/rho: a
                   scale-free error (Touati's M/rho is unnormalised and ~1/(1-gamma) times larger),
  q_error          MSE of predicted Q against Q*_r (FB) or Q^beta_r (one-step FB), over all (s, a),
  policy_kl        mean_s KL(softmax(Q_true(s,.)) || softmax(Q_pred(s,.))), temperature 1,
  greedy_match     fraction of states whose greedy action equals argmax Q_true, over states where
                   that argmax is unique (ties, e.g. absorbing states, are not counted).
Each metric is averaged over the rewards; one sample row per reward is also returned.
"""
from __future__ import annotations

import numpy as np
import torch

from suites.didactic import ground_truth as gt
from suites.didactic.cmp import CMP, five_state, load_cmp, three_state
from suites.errors import UserError
from suites.zeroshot import EvalResult, TransitionBatch, ZeroShotAgent

BUILTIN = {"three-state": three_state, "five-state": five_state}
BATCH_MODES = ("exact", "sampled")


def make_task(cmp: str, path: str | None = None, batch: str = "exact", n_eval_rewards: int = 8,
              reward_seed: int = 0, gamma: float | None = None) -> "DidacticTask":
    """Entry point of the registry.  `cmp` is a built-in name or "file" (then `path` is required)."""
    if batch not in BATCH_MODES:
        raise UserError(f"didactic task kwarg batch={batch!r} is not one of {', '.join(BATCH_MODES)}")
    for name, value, low in (("n_eval_rewards", n_eval_rewards, 1), ("reward_seed", reward_seed, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise UserError(f"didactic task kwarg {name} must be an integer >= {low}, got {value!r}")
    if gamma is not None and (isinstance(gamma, bool) or not isinstance(gamma, (int, float))
                              or not 0.0 <= gamma < 1.0):
        raise UserError(f"didactic task kwarg gamma must be a number in [0, 1), got {gamma!r}")
    if cmp == "file":
        if not path:
            raise UserError("didactic/custom-v0 needs the task kwarg 'path' (a CMP YAML file); "
                            "give it in the grid as {id: didactic/custom-v0, kwargs: {path: my_cmp.yaml}}")
        model = load_cmp(path)
        if gamma is not None:
            raise UserError("didactic/custom-v0 takes gamma from its CMP file; remove the 'gamma' task kwarg")
    elif cmp in BUILTIN:
        model = BUILTIN[cmp](**({} if gamma is None else {"gamma": gamma}))
    else:
        raise UserError(f"unknown built-in CMP {cmp!r}; choose one of {', '.join(BUILTIN)} or 'file'")
    return DidacticTask(model, batch=batch, n_eval_rewards=n_eval_rewards, reward_seed=reward_seed)


class DidacticTask:
    discrete_actions = True

    def __init__(self, cmp: CMP, batch: str = "exact", n_eval_rewards: int = 8, reward_seed: int = 0):
        self.cmp = cmp
        self.batch_mode = batch
        self.gamma = cmp.gamma
        S, A = cmp.n_states, cmp.n_actions
        self.obs_dim, self.action_dim, self.n_actions = S, A, A
        # Support of the transition distribution, one row per (s, a, s', a') with p > 0.
        p = np.einsum("s,sa,sat,tb->satb", cmp.rho, cmp.beta, cmp.P, cmp.beta)
        rows = np.argwhere(p > 0)
        self._support = rows
        self._support_p = p[tuple(rows.T)]
        eye_s, eye_a = torch.eye(S), torch.eye(A)
        idx = torch.as_tensor(rows)
        self._exact = TransitionBatch(obs=eye_s[idx[:, 0]], action=eye_a[idx[:, 1]],
                                      next_obs=eye_s[idx[:, 2]], next_action=eye_a[idx[:, 3]],
                                      weight=torch.as_tensor(self._support_p, dtype=torch.float32))
        self._support_probs = torch.as_tensor(self._support_p / self._support_p.sum())
        rng = np.random.default_rng(reward_seed)
        self.eval_rewards = rng.uniform(0.0, 1.0, size=(n_eval_rewards, S))
        # All (s, a) pairs in x = s * A + a order, for predictions.
        self._all_obs = eye_s.repeat_interleave(A, 0)
        self._all_action = eye_a.repeat(S, 1)

    # ---- data -------------------------------------------------------------------------------
    def sample(self, batch_size: int, generator: torch.Generator) -> TransitionBatch:
        if self.batch_mode == "exact":
            return self._exact
        rows = torch.multinomial(self._support_probs, batch_size, replacement=True, generator=generator)
        b = self._exact
        return TransitionBatch(b.obs[rows], b.action[rows], b.next_obs[rows], b.next_action[rows], None)

    def data_hashes(self) -> dict[str, str]:
        return {f"cmp:{self.cmp.name}": self.cmp.digest()}

    # ---- evaluation --------------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self, agent: ZeroShotAgent) -> EvalResult:
        cmp, S, A = self.cmp, self.cmp.n_states, self.cmp.n_actions
        behaviour_ratio = gt.successor_ratio_zheng(cmp) if agent.represents == "behaviour" else None
        rows = []
        for k, reward in enumerate(self.eval_rewards):
            next_states = self._support[:, 2]
            z = agent.infer_task_vector(self._exact, torch.as_tensor(reward[next_states], dtype=torch.float32))
            q_pred = _np(agent.predict_q(self._all_obs, self._all_action, z)).reshape(S, A)
            if (agent.represents, agent.goal_space) == ("behaviour", "state_action"):
                q_true = gt.q_policy(cmp, reward, cmp.beta).reshape(S, A)
                true_ratio, cols = behaviour_ratio, np.ones(S * A, dtype=bool)
                goal_obs, goal_action = self._all_obs, self._all_action
            elif (agent.represents, agent.goal_space) == ("optimal", "state"):
                q_true = gt.q_optimal(cmp, reward).reshape(S, A)
                true_ratio, cols = gt.successor_ratio_touati(cmp, gt.greedy_policy(q_true))
                goal_obs, goal_action = torch.eye(S), torch.zeros(S, A)
            else:
                raise NotImplementedError(f"no didactic ground truth for an agent that represents "
                                          f"{agent.represents!r} over goal space {agent.goal_space!r}")
            ratio_pred = _np(agent.predict_successor_ratio(self._all_obs, self._all_action, goal_obs,
                                                           goal_action, z))
            unique = gt.unique_argmax_mask(q_true)
            greedy_pred = _np(agent.act(torch.eye(S), z)).reshape(S)
            rows.append({
                "reward_idx": k,
                "successor_error": float(np.mean((ratio_pred[:, cols] - true_ratio[:, cols]) ** 2)),
                "successor_rel_error": float(np.sum((ratio_pred[:, cols] - true_ratio[:, cols]) ** 2)
                                             / np.sum(true_ratio[:, cols] ** 2)),
                "q_error": float(np.mean((q_pred - q_true) ** 2)),
                "policy_kl": gt.forward_kl(q_true, q_pred),
                "greedy_match": float(np.mean(greedy_pred[unique] == q_true.argmax(1)[unique]))
                if unique.any() else float("nan"),
                "n_unique_states": int(unique.sum()),
            })
        metrics = {key: float(np.nanmean([r[key] for r in rows]))
                   for key in ("successor_error", "successor_rel_error", "q_error", "policy_kl", "greedy_match")}
        return EvalResult(metrics=metrics, samples=rows)


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().to(torch.float64).cpu().numpy()
