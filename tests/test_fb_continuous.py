"""Continuous-action FB and one-step FB (the path the dmc suite uses), on a 1-D point that moves by its
action: s' = clip(s + 0.2 a, -1, 1).  With reward r(s') = s' the best action is +1 everywhere, and with
r(s') = -s' it is -1; both are also the one-step improvement of the uniform behaviour policy."""
import io

import pytest
import torch

from algorithms.fb import fb, onestep_fb
from suites.zeroshot import TransitionBatch


class PointOnALine:
    obs_dim, action_dim, n_actions, discrete_actions, gamma = 1, 1, None, False, 0.9

    def sample(self, n: int, generator: torch.Generator) -> TransitionBatch:
        s = torch.rand(n, 1, generator=generator) * 2 - 1
        a = torch.rand(n, 1, generator=generator) * 2 - 1
        s2 = (s + 0.2 * a).clamp(-1, 1)
        a2 = torch.rand(n, 1, generator=generator) * 2 - 1
        return TransitionBatch(s, a, s2, a2)


SMALL = {
    "fb": fb.Config(latent_dim=8, batch_size=256, lr=1e-3, actor_lr=1e-3, forward_hidden=(64, 32),
                    backward_hidden=(64, 64), actor_hidden=(64, 32), discount=0.9),
    "onestep_fb": onestep_fb.Config(latent_dim=8, batch_size=256, lr=1e-3, forward_hidden=(64, 64),
                                    backward_hidden=(64, 64), actor_hidden=(64, 64), activation="relu",
                                    alpha=0.0, tanh_squash=False, reward_temperature=0.0, discount=0.9,
                                    orthonorm_coeff=0.1),
}


def make_agent(name: str, seed: int = 0):
    torch.manual_seed(seed)
    task = PointOnALine()
    cls = fb.FB if name == "fb" else onestep_fb.OneStepFB
    return cls(SMALL[name], task.obs_dim, task.action_dim, 0, task.gamma), task


@pytest.mark.parametrize("name", ["fb", "onestep_fb"])
def test_continuous_update_is_finite_and_acts_in_bounds(name):
    agent, task = make_agent(name)
    gen = torch.Generator().manual_seed(0)
    for _ in range(5):
        logs = agent.update(task.sample(64, gen), gen)
    assert all(torch.isfinite(torch.as_tensor(v)) for v in logs.values())
    assert any(k.startswith("actor") for k in logs)
    z = torch.randn(8)
    action = agent.act(torch.linspace(-1, 1, 11)[:, None], z)
    assert action.shape == (11, 1) and torch.all(action.abs() <= 1)


@pytest.mark.parametrize("name", ["fb", "onestep_fb"])
def test_continuous_agent_learns_to_move_toward_the_reward(name):
    torch.set_num_threads(1)
    agent, task = make_agent(name)
    gen = torch.Generator().manual_seed(1)
    for _ in range(1500):
        agent.update(task.sample(256, gen), gen)
    inference = task.sample(4096, torch.Generator().manual_seed(2))
    states = torch.linspace(-0.8, 0.8, 17)[:, None]
    right = agent.act(states, agent.infer_task_vector(inference, inference.next_obs[:, 0]))
    left = agent.act(states, agent.infer_task_vector(inference, -inference.next_obs[:, 0]))
    assert right.mean() > 0.5, right.squeeze()
    assert left.mean() < -0.5, left.squeeze()


@pytest.mark.parametrize("name", ["fb", "onestep_fb"])
def test_continuous_checkpoint_round_trip(name):
    agent, task = make_agent(name)
    gen = torch.Generator().manual_seed(0)
    for _ in range(3):
        agent.update(task.sample(64, gen), gen)
    buffer = io.BytesIO()  # through bytes, as a checkpoint file (a live state_dict shares optimiser tensors)
    torch.save(agent.state_dict(), buffer)
    buffer.seek(0)
    clone, _ = make_agent(name, seed=123)
    clone.load_state_dict(torch.load(buffer, weights_only=False))
    states, z = torch.linspace(-1, 1, 5)[:, None], torch.randn(8)
    assert torch.equal(agent.act(states, z), clone.act(states, z))
    # the optimiser states travel too: one more identical update keeps them identical
    g1, g2 = torch.Generator().manual_seed(9), torch.Generator().manual_seed(9)
    agent.update(task.sample(64, g1), g1)
    clone.update(task.sample(64, g2), g2)
    assert torch.equal(agent.act(states, z), clone.act(states, z))


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 3e-7), (torch.float64, 1e-15)])
def test_the_sigmoid_form_of_tanh_matches_torch_tanh_and_its_gradient(dtype, tol):
    from algorithms.fb.networks import tanh

    x = torch.cat([torch.linspace(-20, 20, 4001, dtype=dtype), torch.tensor([0.0, 1e-9, -1e-9], dtype=dtype)])
    x.requires_grad_(True)
    y = tanh(x)
    assert (y - torch.tanh(x)).abs().max().item() <= tol
    assert y.abs().max().item() <= 1.0
    (grad,) = torch.autograd.grad(y.sum(), x)                 # 1 - y^2, through tanh's own backward
    (expected,) = torch.autograd.grad(torch.tanh(x).sum(), x)
    assert (grad - expected).abs().max().item() <= 4 * tol
