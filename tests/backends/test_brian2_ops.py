"""The Brian2 backend's wider op set: index maps of several parents (cat, stack, padding, slices), linear
reductions (sum, mean), convolutions (1-d, transposed), elementwise functions (sqrt, pow, erf, gelu, ...),
embeddings, tied (transposed) weights and eval-mode batch norm.

Oracles, as in test_brian2.py: pcsim's own explicit Euler (scipy backend, method='euler', same dt) step by
step to 1e-12 with plasticity on, and Z-IL at dt = tau_x, whose accumulators are autograd's gradients.
"""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import pcsim
from pcsim.check import autograd_gradients
from pcsim.numerics import relative_difference
from pcsim.zoo import SMALL_DIMS, load_model_file
from tests.backends.brian2_oracle import assert_same_path
from tests.equivalence.archs import ARCHS

brian2 = pytest.importorskip("brian2")

pytestmark = pytest.mark.filterwarnings("ignore:.*(parseString|parseAll|scanString|parse_all).*")



class IndexOps(nn.Module):
    """cat and stack of two populations, slices, a select, and a padding with a nonzero value."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(3, 4), nn.Linear(3, 2)
        self.head = nn.Linear(6 + 4 + 9 + 2, 2)

    def forward(self, x):
        a, b = torch.tanh(self.a(x)), torch.tanh(self.b(x))
        h = torch.cat([a, b], dim=1)  # (B, 6)
        s = torch.stack([a[:, 1:3], b], dim=1).flatten(1)  # (B, 4)
        p = F.pad(h[:, ::2], (2, 4), value=0.5)  # (B, 9)
        return self.head(torch.cat([h, s, p, a[:, 0:1], b.select(1, 1).unsqueeze(1)], dim=1))


class Reductions(nn.Module):
    """mean over two dims (keepdim), sum over one, sum over everything of a sample."""

    def __init__(self):
        super().__init__()
        self.fc, self.head = nn.Linear(3, 12), nn.Linear(2 + 3 + 1, 2)

    def forward(self, x):
        h = torch.tanh(self.fc(x)).view(-1, 2, 3, 2)
        m = h.mean(dim=(2, 3), keepdim=True).flatten(1)  # (B, 2)
        s = h.sum(dim=(1, 3))  # (B, 3)
        t = h.sum(dim=(1, 2, 3)).unsqueeze(1) / 12.0  # (B, 1)
        return self.head(torch.cat([m, s, t], dim=1))


class Convs(nn.Module):
    """Conv1d (padding) -> gelu -> ConvTranspose1d (stride 2) -> gelu(tanh) -> Conv1d (stride 2) -> Linear."""

    def __init__(self):
        super().__init__()
        self.c1, self.ct = nn.Conv1d(2, 3, 3, padding=1), nn.ConvTranspose1d(3, 2, 3, stride=2, padding=1)
        self.c2, self.head = nn.Conv1d(2, 2, 3, stride=2), nn.Linear(2 * 4, 2)

    def forward(self, x):
        h = F.gelu(self.c1(x))  # (B, 3, 5)
        h = F.gelu(self.ct(h), approximate="tanh")  # (B, 2, 9)
        return self.head(torch.sigmoid(self.c2(h)).flatten(1))  # (B, 2, 4)


class Elementwise(nn.Module):
    """sqrt, rsqrt, reciprocal, log and pow of a positive population; abs, sin, cos, erf, square, hardtanh,
    clamp of a signed one."""

    def __init__(self):
        super().__init__()
        self.fc, self.head = nn.Linear(3, 3), nn.Linear(3 * 12, 2)

    def forward(self, x):
        a = self.fc(x)
        u = torch.sigmoid(a) + 0.5
        parts = [torch.sqrt(u), torch.rsqrt(u), torch.reciprocal(u), torch.log(u), u ** 3, u ** 0.5,
                 torch.abs(a), torch.sin(a), torch.cos(a), torch.erf(a), F.hardtanh(a, -0.5, 0.5),
                 torch.clamp(a, min=-0.3)]
        return self.head(torch.cat(parts, dim=1))


def seeded(make, in_shape, out=2, seed=0):
    def build():
        torch.manual_seed(seed)
        module = make().double()
        g = torch.Generator().manual_seed(seed + 1)
        return module, (torch.randn(2, *in_shape, generator=g, dtype=torch.float64),), \
            torch.randn(2, out, generator=g, dtype=torch.float64)
    return build


def zoo(name):
    """A zoo model at its small dims, with an MSE target (the backend's output error) of its output's shape."""
    def build():
        module, inputs, target = load_model_file(name).build_model(seed=0, **SMALL_DIMS[name])
        module, inputs = module.double(), tuple(x.double() if x.is_floating_point() else x for x in inputs)
        if not target.is_floating_point():
            with torch.no_grad():
                shape = module(*inputs).shape
            target = torch.randn(shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
        return module, inputs, target.double()
    return build


def arch(name):
    return lambda: ARCHS[name](torch.float64, "mse")


PROBLEMS = {
    "index_ops": seeded(IndexOps, (3,)),
    "reductions": seeded(Reductions, (3,)),
    "convs": seeded(Convs, (2, 5)),
    "elementwise": seeded(Elementwise, (3,)),
    "embedding_mlp": arch("embedding_mlp"),
    "batchnorm1d_mlp": arch("batchnorm1d_mlp"),
    "tied_autoencoder": zoo("tied_autoencoder"),
}


@pytest.mark.parametrize("name", list(PROBLEMS))
def test_numpy_target_is_pcsims_euler_path(name):
    module, inputs, target = PROBLEMS[name]()
    graph = pcsim.trace(module, *inputs).level()
    kw = dict(t_end=0.5, dt=0.05, method="euler", tau_x=0.5, plasticity=pcsim.after(0.1),
              record=pcsim.Record(every_step=True))
    ref = pcsim.simulate(graph, inputs, target, backend="scipy", **kw)
    got = pcsim.simulate(graph, inputs, target, backend="brian2", **kw)
    assert got.meta["backend"] == "brian2" and len(got.t) == 11
    assert all(np.abs(ref.updates[p]).max() > 0 for p in ref.updates)  # every parameter learnt
    assert_same_path(got, ref)


# (the architectures and zoo models get Z-IL on Brian2 in test_brian2_archs.py and test_brian2_zoo.py)
ZIL = {name: PROBLEMS[name] for name in ("index_ops", "reductions", "convs", "elementwise")}


@pytest.mark.parametrize("name", list(ZIL))
def test_zil_on_brian2_gives_autograd_gradients(name):
    module, inputs, target = ZIL[name]()
    graph = pcsim.trace(module, *inputs).level()
    dt = 0.25
    plan = pcsim.discretise(tau_x=dt, tau_e=0, dt=dt, plasticity="zil")
    tr = pcsim.simulate(graph, inputs, target, backend="brian2", t_end=(plan.update_step(graph.depth) + 1) * dt,
                        tau_x=dt, method="euler", dt=dt, plasticity="zil", record=[])
    reference = autograd_gradients(module, inputs, target)
    assert set(reference) == set(tr.updates)
    for p, ref in reference.items():
        assert relative_difference(torch.as_tensor(tr.updates[p]), ref) <= 1e-10, p


# -- refusals name the vertex and why -----------------------------------------------------------------------
class PaddedEmbedding(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed, self.head = nn.Embedding(6, 3, padding_idx=0), nn.Linear(3, 2)

    def forward(self, tokens):
        return self.head(self.embed(tokens).mean(1))


class ScaledTiedWeight(nn.Module):
    def __init__(self):
        super().__init__()
        self.enc = nn.Linear(3, 4)

    def forward(self, x):
        return F.linear(torch.tanh(self.enc(x)), 0.5 * self.enc.weight.t())


class Conv1DLayers(nn.Module):
    """Hugging Face's Conv1D (GPT-2's projections): addmm(bias, x, W) with W of shape (inputs, outputs), on a
    sequence flattened to rows; one without a bias row (a zero-free bias of each row's own)."""

    def __init__(self):
        super().__init__()
        self.w1, self.b1 = nn.Parameter(torch.randn(3, 5)), nn.Parameter(torch.randn(5))
        self.w2, self.b2 = nn.Parameter(torch.randn(5, 2) / 3), nn.Parameter(torch.randn(4, 2))

    def forward(self, x):  # x: (2, 2, 3)
        h = torch.tanh(torch.addmm(self.b1, x.reshape(-1, 3), self.w1))
        return torch.addmm(self.b2, h, self.w2).view(2, 2, 2)


def test_addmm_of_a_parameter_matrix_is_a_linear_layer():
    """It used to be refused as 'a product of two variables' (GPT-2 on Brian2 stopped at its first Conv1D)."""
    from tests.backends.brian2_oracle import check_zil_on_brian2

    torch.manual_seed(0)
    module, x = Conv1DLayers().double(), torch.randn(2, 2, 3, dtype=torch.float64)
    target = torch.randn(2, 2, 2, dtype=torch.float64)
    graph = pcsim.trace(module, x)
    kw = dict(t_end=0.3, dt=0.1, method="euler", tau_x=0.5, plasticity="always", record=pcsim.Record(every_step=True))
    assert_same_path(pcsim.simulate(graph, (x,), target, backend="brian2", **kw),
                     pcsim.simulate(graph, (x,), target, backend="scipy", **kw))
    check_zil_on_brian2(module, (x,), target, "mse")


class AddmmOfPopulations(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(3, 3), nn.Linear(3, 3)

    def forward(self, x):
        return torch.addmm(torch.zeros(3), torch.tanh(self.a(x)), torch.tanh(self.b(x)))


@pytest.mark.parametrize("make,inputs,vertex,why", [
    (PaddedEmbedding, lambda: torch.tensor([[0, 2], [3, 1]]), "embed", "padding_idx, whose row torch gives no"),
    (AddmmOfPopulations, lambda: torch.randn(3, 3, dtype=torch.float64), "addmm",
     "its weight is not a module parameter"),
    (ScaledTiedWeight, lambda: torch.randn(2, 3, dtype=torch.float64), "linear_1",
     "which is not an index map of it"),
])
def test_refusals_name_the_vertex_and_why(make, inputs, vertex, why):
    torch.manual_seed(0)
    module, x = make().double(), inputs()
    graph = pcsim.trace(module, x)
    out = module(x)
    with pytest.raises(pcsim.UnsupportedOpError) as info:
        pcsim.simulate(graph, (x,), torch.zeros_like(out), backend="brian2", t_end=0.5, dt=0.1)
    msg = str(info.value)
    assert f"vertex '{vertex}'" in msg and why in msg and "Brian2 equations" in msg, msg


def test_embedding_with_a_padding_idx_it_never_reads_renders():
    torch.manual_seed(0)
    module, tokens = PaddedEmbedding().double(), torch.tensor([[4, 2], [3, 1]])
    graph = pcsim.trace(module, tokens)
    target = torch.randn(2, 2, dtype=torch.float64)
    kw = dict(t_end=0.3, dt=0.1, method="euler", tau_x=0.5, plasticity="always", record=pcsim.Record(every_step=True))
    assert_same_path(pcsim.simulate(graph, (tokens,), target, backend="brian2", **kw),
                     pcsim.simulate(graph, (tokens,), target, backend="scipy", **kw))


# -- wiring, without Brian2: the synapses' forward sums are the op ----------------------------------------------
@pytest.mark.parametrize("layer,shape", [
    (lambda: nn.Conv2d(4, 6, 3, stride=2, padding=2, dilation=2, groups=2), (2, 4, 7, 6)),
    (lambda: nn.Conv2d(2, 3, (2, 3), padding="same"), (2, 2, 5, 4)),
    (lambda: nn.Conv1d(2, 4, 4, padding="same", dilation=2, groups=2), (2, 2, 9)),
    (lambda: nn.ConvTranspose2d(4, 6, 3, stride=2, padding=1, output_padding=1, groups=2, dilation=2), (2, 4, 3, 4)),
    (lambda: nn.ConvTranspose1d(2, 3, 2, stride=3, padding=1), (1, 2, 4)),
])
@pytest.mark.filterwarnings("ignore:Using padding='same'")
def test_convolution_wiring_reproduces_torch(layer, shape):
    from pcsim.backends.brian2.ops import edges_of

    torch.manual_seed(0)
    module = layer().double()
    x = torch.randn(*shape, dtype=torch.float64)
    graph = pcsim.trace(nn.Sequential(nn.Tanh(), module), x)
    (vertex,) = [v for v in graph.vertices if v.op in ("conv1d", "conv2d", "convolution")]
    edges, offsets = edges_of(vertex, [shape], graph.params, graph.constants)
    h = torch.tanh(x).reshape(-1).numpy()
    mu = sum(o.values for o in offsets) + np.bincount(edges[0].j, edges[0].weight * h[edges[0].i],
                                                       minlength=int(np.prod(vertex.shape)))
    np.testing.assert_allclose(mu, module(torch.tanh(x)).detach().reshape(-1).numpy(), rtol=0, atol=1e-13)
    w = module.weight.detach().reshape(-1).numpy()
    assert np.array_equal(edges[0].weight, w[edges[0].kidx]) and edges[0].param.endswith("weight")


def test_a_vertex_reading_parameters_alone_is_refused_not_left_without_plasticity():
    """A parameter returned as an output is a vertex with no parents: its update stayed zero in Brian2, where
    scipy and torch gave autograd's gradient."""
    from tests.capture.test_trace import _GaussianPolicy

    torch.manual_seed(0)
    module, x = _GaussianPolicy(expand=True).double(), torch.randn(3, 4, dtype=torch.float64)
    graph = pcsim.trace(module, x)
    with pytest.raises(pcsim.UnsupportedOpError, match=r"reads parameters alone .*Brian2 equations"):
        pcsim.simulate(graph, (x,), tuple(torch.zeros_like(o) for o in module(x)), backend="brian2", t_end=0.5,
                       dt=0.1, plasticity="zil")
