"""Networks of the FB family.  Every map returns per-head outputs [E, N, d] (forward) or [N, d] (backward).

arch "tabular": for one-hot inputs (the didactic CMPs).  The input pair (s, a) becomes the one-hot
    outer product onehot(s) (x) onehot(a), so a bias-free linear layer is exactly a table over
    state-action pairs.  A latent input enters linearly per pair: F(x, z) = W_x + A_x z
    ("tabular in (s, a), linear in z").
arch "mlp": concatenated inputs through [Linear, LayerNorm, tanh, (Linear, ReLU) x k, Linear]
    (the first-layer LayerNorm + tanh of both references, fb.md §2.1, §3.1).
"""
from __future__ import annotations

import torch
from torch import nn

ARCHS = ("tabular", "mlp")


def pair_features(obs: torch.Tensor, action: torch.Tensor | None) -> torch.Tensor:
    """onehot(s) (x) onehot(a), flattened to [N, S*A]; just onehot(s) when action is None."""
    if action is None:
        return obs
    return (obs[:, :, None] * action[:, None, :]).flatten(1)


class TabularMap(nn.Module):
    """F_e(x[, z]) = W_e[x] (+ A_e[x] z) for E heads; x one-hot over `n_inputs` entries."""

    def __init__(self, n_inputs: int, out_dim: int, z_dim: int = 0, heads: int = 1, init_scale: float = 1.0):
        super().__init__()
        self.table = nn.Parameter(torch.randn(heads, n_inputs, out_dim) * init_scale / out_dim ** 0.5)
        self.z_table = (nn.Parameter(torch.randn(heads, n_inputs, out_dim, z_dim) * init_scale / z_dim)
                        if z_dim else None)

    def forward(self, features: torch.Tensor, z: torch.Tensor | None = None) -> torch.Tensor:
        out = features @ self.table                                      # [E, N, d]
        if self.z_table is not None:
            out = out + torch.einsum("nx,exdk,nk->end", features, self.z_table, z)
        return out


class MLPMap(nn.Module):
    """E independent MLPs on concat(inputs): [Lin, LN, tanh, (Lin, ReLU) x (len(hidden)-1), Lin]."""

    def __init__(self, in_dim: int, out_dim: int, hidden: tuple[int, ...], heads: int = 1):
        super().__init__()
        self.heads = nn.ModuleList(_mlp(in_dim, out_dim, hidden) for _ in range(heads))

    def forward(self, features: torch.Tensor, z: torch.Tensor | None = None) -> torch.Tensor:
        x = features if z is None else torch.cat([features, z], dim=-1)
        return torch.stack([h(x) for h in self.heads])


def _mlp(in_dim: int, out_dim: int, hidden: tuple[int, ...]) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Linear(in_dim, hidden[0]), nn.LayerNorm(hidden[0]), nn.Tanh()]
    for a, b in zip(hidden[:-1], hidden[1:]):
        layers += [nn.Linear(a, b), nn.ReLU()]
    layers.append(nn.Linear(hidden[-1], out_dim))
    for m in layers:
        if isinstance(m, nn.Linear):
            nn.init.orthogonal_(m.weight)
            nn.init.zeros_(m.bias)
    return nn.Sequential(*layers)


def build_map(arch: str, obs_dim: int, action_dim: int, out_dim: int, *, uses_action: bool, z_dim: int = 0,
              heads: int = 1, hidden: tuple[int, ...] = (256, 256)) -> nn.Module:
    """A forward (heads >= 1, maybe z-conditioned) or backward (heads = 1) map."""
    if arch == "tabular":
        n_inputs = obs_dim * action_dim if uses_action else obs_dim
        return TabularMap(n_inputs, out_dim, z_dim=z_dim, heads=heads)
    if arch == "mlp":
        in_dim = obs_dim + (action_dim if uses_action else 0) + z_dim
        return MLPMap(in_dim, out_dim, hidden, heads=heads)
    raise ValueError(f"arch must be one of {ARCHS}, not {arch!r}")


def map_inputs(arch: str, obs: torch.Tensor, action: torch.Tensor | None) -> torch.Tensor:
    """The input features each arch expects: one-hot pairs for tabular, concatenation for mlp."""
    if arch == "tabular":
        return pair_features(obs, action)
    return obs if action is None else torch.cat([obs, action], dim=-1)
