"""`fa_zil(compile=True)` and the shared compile path (`pcsim.algorithms.compiled`).

Oracle: torch autograd on the module itself (`pcsim.check.autograd_gradients`). Each case also
asserts that compiled code ran (an entry on the graph, no fallback warning), so that a silent
fallback to the eager wave cannot pass for it.
"""

import warnings

import pytest
import torch
from torch.fx.experimental.proxy_tensor import make_fx

import pcsim
from pcsim.algorithms import compiled
from pcsim.algorithms.compiled import fold_products, layout_key
from pcsim.check import autograd_gradients
from tests.equivalence.archs import ARCHS
from tests.graph.helpers import assert_grads_match

pytestmark = pytest.mark.slow  # each case compiles: seconds apiece

# (the GRU's compiled wave is checked against autograd by test_one_compilation_serves_new_data_and_parameters)
ARCH_CASES = ["mlp_tanh_bias", "cnn_pools", "lstm_manual", "rnn_shared", "attention", "batchnorm1d_mlp",
              "resnet_conv_block", "multi_ops", "embedding_mlp"]


def _entries(graph, kind="fa-zil-wavefront") -> list:
    g = graph.level().pruned()
    return [v for k, v in g._derived.items() if isinstance(k, tuple) and k[0] == kind]


def _fa_zil_compiled(graph, inputs, target, loss, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # a fallback must not pass for compiled code
        return pcsim.fa_zil(graph, inputs, target, loss, compile=True, **kw)


@pytest.mark.parametrize("arch", ARCH_CASES)
def test_compiled_wavefront_equals_autograd(arch):
    loss = "ce" if arch != "resnet_conv_block" else "mse"
    module, inputs, target = ARCHS[arch](torch.float64, loss)
    graph = pcsim.trace(module, *inputs)
    got = _fa_zil_compiled(graph, inputs, target, loss)
    assert len(_entries(graph)) == 1 and _entries(graph)[0] is not None, "the compiled wave ran"
    assert_grads_match(got, autograd_gradients(module, inputs, target, loss))


def test_compiled_wavefront_keeps_gamma_and_a_mutated_gamma_fails():
    """gamma scales the wave once per hidden level (eager and compiled alike); 0.99999 is not 1."""
    module, inputs, target = ARCHS["mlp_tanh_bias"](torch.float64, "mse")
    graph = pcsim.trace(module, *inputs)
    eager = pcsim.fa_zil(graph, inputs, target, gamma=0.5)
    assert_grads_match(_fa_zil_compiled(graph, inputs, target, "mse", gamma=0.5), eager)
    with pytest.raises(AssertionError):
        assert_grads_match(_fa_zil_compiled(graph, inputs, target, "mse", gamma=0.99999),
                           autograd_gradients(module, inputs, target))


def test_one_compilation_serves_new_data_and_parameters(monkeypatch):
    """Every value the compiled wave reads is an argument: new data gives its own gradients."""
    traces = []
    make_fx = compiled.make_fx
    monkeypatch.setattr(compiled, "make_fx", lambda *a, **k: traces.append(1) or make_fx(*a, **k))
    module, inputs, target = ARCHS["gru"](torch.float64, "ce")
    graph = pcsim.trace(module, *inputs)
    _fa_zil_compiled(graph, inputs, target, "ce")
    gen = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=gen, dtype=p.dtype))
    inputs2 = tuple(torch.randn(x.shape, generator=gen, dtype=x.dtype) for x in inputs)
    target2 = torch.randint(0, 4, target.shape, generator=gen)
    got = _fa_zil_compiled(graph, inputs2, target2, "ce")
    assert len(traces) == 1, "the second call reused the compiled wave"
    assert_grads_match(got, autograd_gradients(module, inputs2, target2, "ce"))


def test_a_failed_compilation_warns_and_runs_the_eager_wave(monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("no C++ compiler on this machine")

    monkeypatch.setattr(torch._inductor, "compile", broken)
    module, inputs, target = ARCHS["mlp_tanh_bias"](torch.float64, "mse")
    graph = pcsim.trace(module, *inputs)
    with pytest.warns(RuntimeWarning, match="compiling the Fa-Z-IL wavefront failed .*no C\\+\\+ compiler"):
        got = pcsim.fa_zil(graph, inputs, target, compile=True)
    eager = pcsim.fa_zil(graph, inputs, target)
    assert all(torch.equal(got[n], eager[n]) for n in eager)
    assert _entries(graph) == [None], "the failure is remembered: no second attempt per call"


def test_compile_is_refused_for_the_autonomous_mode():
    module, inputs, target = ARCHS["mlp_tanh_bias"](torch.float64, "mse")
    with pytest.raises(ValueError, match="compile=True applies to mode='wavefront'"):
        pcsim.fa_zil(pcsim.trace(module, *inputs), inputs, target, mode="autonomous", compile=True)


def test_layout_key_tells_layouts_and_shared_memory_apart():
    a = torch.zeros(4, 6)
    assert layout_key([a, a.clone()]) == layout_key([torch.ones(4, 6), torch.ones(4, 6)])
    assert layout_key([a, a]) != layout_key([a, a.clone()])  # the same memory twice
    assert layout_key([a.t()]) != layout_key([a.t().contiguous()])  # strides
    assert layout_key([a[1:]]) != layout_key([a[:3]])  # offsets
    assert layout_key([a]) != layout_key([a.float()])  # float64 by default in the tests


def test_another_loss_on_the_same_layout_is_compiled_apart():
    """A loss is traced into the compiled code: two losses with the same target layout get two."""
    from dataclasses import dataclass

    from pcsim.algorithms.losses import MSE

    @dataclass(frozen=True)
    class DoubledMSE(MSE):
        name: str = "doubled-mse"

        def value(self, mu, target):
            return ((mu - target) ** 2).sum()

        def error(self, mu, target):
            return 2 * (target - mu)

        def gradient(self, mu, target):
            return 2 * (mu - target)

    module, inputs, target = ARCHS["mlp_tanh_bias"](torch.float64, "mse")
    graph = pcsim.trace(module, *inputs)
    for loss in ("mse", DoubledMSE()):
        got = _fa_zil_compiled(graph, inputs, target, loss)
        assert_grads_match(got, pcsim.fa_zil(graph, inputs, target, loss))
        il = pcsim.il(graph, inputs, target, loss, steps=12, compile=True)
        assert_grads_match(il, pcsim.il(graph, inputs, target, loss, steps=12))
    assert len(_entries(graph)) == 2
    assert len([k for k in graph._derived if isinstance(k, tuple) and k[0] == "il-steady"]) == 2


def test_fused_recurrent_layers_compile_too():
    """nn.LSTM kept whole (`fused=True`): its kernel is traced and compiled like any other op."""
    from torch import nn

    torch.manual_seed(0)
    lstm, head = nn.LSTM(3, 5, batch_first=True).double(), nn.Linear(5, 4).double()

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.lstm, self.head = lstm, head

        def forward(self, x):
            return self.head(self.lstm(x)[1][0][-1])

    module = Net()
    x, y = torch.randn(6, 4, 3), torch.randint(0, 4, (6,))
    graph = pcsim.trace(module, x, fused=True)
    assert_grads_match(_fa_zil_compiled(graph, (x,), y, "ce"), autograd_gradients(module, (x,), y, "ce"))
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        got = pcsim.il(graph, (x,), y, "ce", steps=10, compile=True)
    assert_grads_match(got, pcsim.il(graph, (x,), y, "ce", steps=10))



@pytest.mark.parametrize(("arch", "layout_optimization"), [("resnet_conv_block", False), ("cnn_pools", None)])
def test_batch_norm_graphs_compile_without_the_channels_last_conversion(monkeypatch, arch, layout_optimization):
    """The option that held ResNet-18's compiled wave at 1.62x BP's memory is off there, and only there."""
    from pcsim.algorithms import fa_zil_wavefront

    seen = []
    real = fa_zil_wavefront.compile_function
    monkeypatch.setattr(fa_zil_wavefront, "compile_function",
                        lambda *a, **kw: seen.append(kw["options"]) or real(*a, **kw))
    module, inputs, target = ARCHS[arch](torch.float64, "mse")
    graph = pcsim.trace(module, *inputs)
    assert_grads_match(_fa_zil_compiled(graph, inputs, target, "mse"), autograd_gradients(module, inputs, target))
    assert [o.get("layout_optimization") for o in seen] == [layout_optimization]

def _targets(gm) -> list:
    return [n.target for n in gm.graph.nodes if n.op == "call_function"]


@pytest.mark.parametrize("form", ["plain", "twice transposed", "transposed", "product first"])
def test_fold_products_turns_an_accumulated_product_into_addmm(form):
    """The sums autograd records for a shared weight; the oracle is the unfolded function run eagerly."""
    def fn(acc, a, b):
        product = {"plain": lambda: a @ b, "twice transposed": lambda: (a @ b).t().t(),
                   "transposed": lambda: (b.t() @ a.t()).t()}.get(form, lambda: a @ b)()
        return product + acc if form == "product first" else acc + product

    acc, a, b = torch.randn(5, 4), torch.randn(5, 3), torch.randn(3, 4)
    gm = fold_products(make_fx(fn, tracing_mode="fake")(acc, a, b))
    assert torch.ops.aten.addmm.default in _targets(gm) and torch.ops.aten.mm.default not in _targets(gm)
    assert torch.ops.aten.add.Tensor not in _targets(gm)
    torch.testing.assert_close(gm(acc, a, b), fn(acc, a, b), rtol=1e-14, atol=1e-14)


@pytest.mark.parametrize("case", ["alpha", "product reused", "broadcast"])
def test_fold_products_leaves_other_adds_alone(case):
    acc, a, b = torch.randn(5, 4), torch.randn(5, 3), torch.randn(3, 4)
    fn = {"alpha": lambda acc, a, b: torch.add(acc, a @ b, alpha=0.1),  # inductor's own rewrite drops alpha
          "product reused": _reused, "broadcast": lambda acc, a, b: acc[:1] + a @ b}[case]
    gm = fold_products(make_fx(fn, tracing_mode="fake")(acc, a, b))
    assert torch.ops.aten.addmm.default not in _targets(gm)
    torch.testing.assert_close(gm(acc, a, b), fn(acc, a, b), rtol=0, atol=0)


def _reused(acc, a, b):
    product = a @ b
    return acc + product, 2 * product
