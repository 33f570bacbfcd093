"""Networks of the FB family.  Every map returns per-head outputs [E, N, d] (forward) or [N, d] (backward).

arch "tabular": for one-hot inputs (the didactic CMPs).  The input pair (s, a) becomes the one-hot
    outer product onehot(s) (x) onehot(a), so a bias-free linear layer is exactly a table over
    state-action pairs.  A latent input enters linearly per pair: F(x, z) = W_x + A_x z
    ("tabular in (s, a), linear in z").
arch "mlp": concatenated inputs through [Linear, LayerNorm, tanh, (Linear, act) x k, Linear]
    (the first-layer LayerNorm + tanh of both references, fb.md §2.1, §3.1), ensembles batched.
arch "two_stream": controllable_agent's F(s, a, z) (TwoStreamForward; hidden = (width, feature)); its
    B is the plain mlp.  FB's continuous actor is TwoStreamActor; one-step FB's is onestep-fb's GCActor
    (GaussianActor).
"""
from __future__ import annotations

import torch
from torch import nn

ARCHS = ("tabular", "mlp", "two_stream")


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


class _SigmoidTanh(torch.autograd.Function):
    """tanh(x) computed as 2 sigmoid(2x) - 1, with tanh's own backward (1 - y^2) g.

    On these CPUs torch.tanh runs about 5x slower than torch.sigmoid (measured: 516 vs 110 us on
    [2, 256, 256] at 1 thread, the sigmoid form's three kernels included), and the LayerNorm + tanh of
    every first layer made it one of the largest non-GEMM costs of a cpu-size update.  The two agree to 2e-7
    in fp32 (torch.tanh: 3e-8 from the float64 value) and to 1e-15 in float64."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        y = torch.sigmoid(2 * x).mul_(2).sub_(1)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        (y,) = ctx.saved_tensors
        return torch.ops.aten.tanh_backward(grad, y)


def tanh(x: torch.Tensor) -> torch.Tensor:
    """tanh; on the CPU through the sigmoid (see _SigmoidTanh), elsewhere torch.tanh."""
    return _SigmoidTanh.apply(x) if x.device.type == "cpu" else torch.tanh(x)


ACTIVATIONS = {"relu": nn.functional.relu, "gelu": nn.functional.gelu, "tanh": tanh}
INITS = ("orthogonal", "xavier")


class EnsembleLinear(nn.Module):
    """E independent linear layers applied as one batched matmul: [N, in] or [E, N, in] -> [E, N, out].

    init "orthogonal" (controllable_agent) or "xavier" (= flax variance_scaling(gain^2, fan_avg, uniform),
    the one-step FB reference); biases start at zero in both.
    """

    def __init__(self, in_dim: int, out_dim: int, heads: int = 1, init: str = "orthogonal", gain: float = 1.0):
        super().__init__()
        if init not in INITS:
            raise ValueError(f"init must be one of {INITS}, not {init!r}")
        members = []
        for _ in range(heads):  # each member initialised like its own [out, in] layer
            w = torch.empty(out_dim, in_dim)
            (nn.init.orthogonal_ if init == "orthogonal" else nn.init.xavier_uniform_)(w, gain=gain)
            members.append(w.T)
        self.weight = nn.Parameter(torch.stack(members))
        self.bias = nn.Parameter(torch.zeros(heads, 1, out_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 2:
            x = x.expand(self.weight.shape[0], *x.shape)
        return torch.baddbmm(self.bias, x, self.weight)


class EnsembleLayerNorm(nn.Module):
    def __init__(self, dim: int, heads: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(heads, 1, dim))
        self.bias = nn.Parameter(torch.zeros(heads, 1, dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.layer_norm(x, x.shape[-1:], eps=self.eps) * self.weight + self.bias


class EnsembleMLP(nn.Module):
    """E independent MLPs in the shape both references share (fb.md §2.1, §3.1):

        Dense -> [LayerNorm] -> first_activation,  then (Dense -> activation) for the middle layers,
        then a last Dense (followed by `activation` only if activate_final).

    dims: (hidden..., out).  Evaluated as batched matmuls, so the ensemble costs one GEMM per layer.
    """

    def __init__(self, in_dim: int, dims: tuple[int, ...], heads: int = 1, layer_norm: bool = True,
                 first_activation: str = "tanh", activation: str = "relu", activate_final: bool = False,
                 init: str = "orthogonal", ln_eps: float = 1e-5):
        super().__init__()
        sizes = (in_dim, *dims)
        self.layers = nn.ModuleList(EnsembleLinear(a, b, heads, init) for a, b in zip(sizes[:-1], sizes[1:]))
        self.norm = EnsembleLayerNorm(dims[0], heads, ln_eps) if layer_norm else None
        self.first, self.act = ACTIVATIONS[first_activation], ACTIVATIONS[activation]
        self.activate_final = activate_final

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i == 0 and (last > 0 or self.activate_final):
                x = self.first(self.norm(x) if self.norm is not None else x)
            elif i > 0 and (i < last or self.activate_final):
                x = self.act(x)
        return x


class MLPMap(nn.Module):
    """F or B as an ensemble MLP on concat(inputs[, z]) -> [E, N, out]."""

    def __init__(self, in_dim: int, out_dim: int, hidden: tuple[int, ...], heads: int = 1, **mlp_kwargs):
        super().__init__()
        self.net = EnsembleMLP(in_dim, (*hidden, out_dim), heads=heads, **mlp_kwargs)

    def forward(self, features: torch.Tensor, z: torch.Tensor | None = None) -> torch.Tensor:
        return self.net(features if z is None else torch.cat([features, z], dim=-1))


class TwoStreamForward(nn.Module):
    """controllable_agent's F(s, a, z) (fb.md §2.1): embed (s, a) and (s, z) separately with
    [Dense, LN, tanh, Dense, ReLU], concatenate, then E heads [Dense, ReLU, Dense]."""

    def __init__(self, obs_dim: int, action_dim: int, z_dim: int, out_dim: int, hidden: int, feature: int,
                 heads: int):
        super().__init__()
        self.obs_dim = obs_dim
        self.embed_sa = EnsembleMLP(obs_dim + action_dim, (hidden, feature), activate_final=True)
        self.embed_sz = EnsembleMLP(obs_dim + z_dim, (hidden, feature), activate_final=True)
        self.heads = EnsembleMLP(2 * feature, (hidden, out_dim), heads=heads, layer_norm=False,
                                 first_activation="relu")

    def forward(self, obs_action: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """obs_action: concat(s, a) as `map_inputs` builds it."""
        obs = obs_action[:, : self.obs_dim]
        h = torch.cat([self.embed_sa(obs_action)[0], self.embed_sz(torch.cat([obs, z], -1))[0]], dim=-1)
        return self.heads(h)


class TwoStreamActor(nn.Module):
    """controllable_agent's actor (fb.md §2.1): embed s and (s, z), concatenate, [Dense, ReLU, Dense],
    tanh mean; exploration noise is added by the algorithm (truncated normal, std 0.2, clip 0.3)."""

    def __init__(self, obs_dim: int, z_dim: int, action_dim: int, hidden: int, feature: int):
        super().__init__()
        self.embed_s = EnsembleMLP(obs_dim, (hidden, feature), activate_final=True)
        self.embed_sz = EnsembleMLP(obs_dim + z_dim, (hidden, feature), activate_final=True)
        self.trunk = EnsembleMLP(2 * feature, (hidden, action_dim), layer_norm=False, first_activation="relu")

    def forward(self, obs: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        h = torch.cat([self.embed_s(obs)[0], self.embed_sz(torch.cat([obs, z], -1))[0]], dim=-1)
        return tanh(self.trunk(h)[0])


class GaussianActor(nn.Module):
    """onestep-fb's GCActor (fb.md §3.1): MLP on concat(s, z) with activate_final, then a Dense mean
    initialised with scale `mean_init_scale` (xavier gain sqrt(scale)); constant std 1.  Returns the mean
    (tanh-squashed when `tanh_squash`)."""

    def __init__(self, obs_dim: int, z_dim: int, action_dim: int, hidden: tuple[int, ...], layer_norm: bool,
                 activation: str, tanh_squash: bool, mean_init_scale: float = 0.01):
        super().__init__()
        self.net = EnsembleMLP(obs_dim + z_dim, hidden, layer_norm=layer_norm, activation=activation,
                               activate_final=True, init="xavier", ln_eps=1e-6)
        self.mean = EnsembleLinear(hidden[-1], action_dim, init="xavier", gain=mean_init_scale ** 0.5)
        self.tanh_squash = tanh_squash

    def pre_squash_mean(self, obs: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return self.mean(self.net(torch.cat([obs, z], dim=-1)))[0]

    def forward(self, obs: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        mu = self.pre_squash_mean(obs, z)
        return tanh(mu) if self.tanh_squash else mu


def build_map(arch: str, obs_dim: int, action_dim: int, out_dim: int, *, uses_action: bool, z_dim: int = 0,
              heads: int = 1, hidden: tuple[int, ...] = (256, 256), **mlp_kwargs) -> nn.Module:
    """A forward (heads >= 1, maybe z-conditioned) or backward (heads = 1) map.
    `mlp_kwargs` (activation, init, ln_eps, ...) go to EnsembleMLP for arch 'mlp'."""
    if arch == "tabular":
        n_inputs = obs_dim * action_dim if uses_action else obs_dim
        return TabularMap(n_inputs, out_dim, z_dim=z_dim, heads=heads)
    if arch == "mlp" or (arch == "two_stream" and not z_dim):  # two_stream: only F(s, a, z) has two streams
        in_dim = obs_dim + (action_dim if uses_action else 0) + z_dim
        return MLPMap(in_dim, out_dim, hidden, heads=heads, **mlp_kwargs)
    if arch == "two_stream":
        return TwoStreamForward(obs_dim, action_dim, z_dim, out_dim, hidden[0], hidden[-1], heads)
    raise ValueError(f"arch must be one of {ARCHS}, not {arch!r}")


def map_inputs(arch: str, obs: torch.Tensor, action: torch.Tensor | None):
    """The input features each arch expects: one-hot pairs for tabular, concatenation for mlp; images
    (pixel observations, [N, C, H, W]) go to the map's own encoder with the action beside them
    (algorithms/fb/encoders.py, encoder "per_network")."""
    if arch == "tabular":
        return pair_features(obs, action)
    if obs.dim() == 4:
        from algorithms.fb.encoders import ImageInputs

        return ImageInputs(obs, action)
    return obs if action is None else torch.cat([obs, action], dim=-1)
