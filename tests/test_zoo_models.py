"""The model zoo (models/*.py): every model is exact under Z-IL and both Fa-Z-IL modes.

Oracle: torch autograd on the module itself (pcsim.check). Models run at reduced width here (same
architecture and depth: ResNet-18 keeps its 8 blocks); `pcsim check --all` runs them at full size.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import pcsim
from pcsim.numerics import tolerance
from pcsim.zoo import SMALL_DIMS, load_model_file, zoo_names

ISSUE_ZOO = {"mlp", "alexnet", "rnn", "lstm", "gru", "resnet18", "transformer", "densenet_block",
             "tied_autoencoder", "residual_mlp"}
REDUCED = SMALL_DIMS  # every model at a size that runs in about a second
RULES = ["zil", "fa-zil-wavefront", "fa-zil-autonomous"]
TOL = tolerance(torch.float64)


pytestmark = pytest.mark.usefixtures("one_thread")


def reduced(name: str, **extra):
    spec = load_model_file(name)
    module, inputs, target = spec.build_model(seed=0, **{**REDUCED.get(name, {}), **extra})
    return spec, module, inputs, target


def test_the_zoo_holds_the_issues_models():
    assert ISSUE_ZOO <= set(zoo_names())


@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize("name", zoo_names())
def test_every_zoo_model_is_exact(name, rule):
    spec, module, inputs, target = reduced(name)
    report = pcsim.check(module, inputs, target, rule=rule, loss=spec.loss, dtype=torch.float64)
    assert report.max_rel_diff <= TOL, report.table(model=name)
    assert sum(float(g.norm()) > 0 for g in report.reference.values()) >= len(report.reference) - 1


@pytest.mark.parametrize("name", ["resnet18", "densenet_block"])
def test_unlevelled_zil_diverges_and_levelling_repairs_it(name):
    spec, module, inputs, target = reduced(name)
    graph = pcsim.trace(module, *inputs)
    assert not graph.is_levelled and graph.level().n_identity > 0
    unlevelled = pcsim.check(module, inputs, target, rule="zil", loss=spec.loss, level=False)
    assert unlevelled.identity_vertices == 0
    assert unlevelled.max_rel_diff > 1e-6, unlevelled.table(model=name)
    levelled = pcsim.check(module, inputs, target, rule="zil", loss=spec.loss)
    assert levelled.identity_vertices > 0 and levelled.max_rel_diff <= TOL


@pytest.mark.parametrize("name", sorted(REDUCED))
def test_builds_accept_input_shape_and_n_classes(name):
    if name in ("rnn", "residual_mlp", "tied_autoencoder", "transformer", "cnn"):
        shape = {"rnn": (5, 2), "transformer": (4,), "cnn": (1, 8, 8)}.get(name, (6,))
    else:
        shape = {"alexnet": (3, 16, 16), "densenet_block": (3, 6, 6), "resnet18": (3, 8, 8),
                 "gru": (3, 4), "lstm": (3, 4), "mlp": (1, 3, 3)}[name]
    spec, module, inputs, target = reduced(name, input_shape=shape, n_classes=3, batch=2)
    with torch.no_grad():
        out = module(*inputs)
    assert inputs[0].shape[0] == 2
    if name != "tied_autoencoder":  # an autoencoder reconstructs its input: no classes
        assert out.shape[-1] == 3
    assert out.shape == (target.shape if spec.loss == "mse" else (2, 3))


def test_full_size_models_have_the_advertised_sizes():
    """Built at their defaults (no forward pass): the sizes the table reports."""
    def count(name):
        return sum(p.numel() for p in load_model_file(name).build_model()[0].parameters())
    assert 11_100_000 < count("resnet18") < 11_250_000  # the CIFAR ResNet-18: 11.17M
    mlp = load_model_file("mlp").build_model()[0]
    assert [m.weight.shape for m in mlp.modules() if isinstance(m, nn.Linear)] == [
        (1000, 784), (1000, 1000), (10, 1000)]
    model, inputs, _ = load_model_file("alexnet").build_model()
    assert inputs[0].shape[1:] == (3, 32, 32) and count("alexnet") > 20_000_000
    assert load_model_file("rnn").build_model()[1][0].shape[1] >= 10  # sequence length


def test_structures_the_table_relies_on():
    _, module, inputs, _ = reduced("tied_autoencoder")
    graph = pcsim.trace(module, *inputs)
    assert len(graph.users["encoder.weight"]) == 2  # W and W^T: one parameter, two vertices
    _, module, inputs, _ = reduced("transformer")
    ops = [v.op for v in pcsim.trace(module, *inputs).vertices]
    assert ops.count("bmm") == 2 and "_softmax" in ops and "embedding" in ops  # attention is decomposed
    _, module, inputs, _ = reduced("lstm")  # less each layer's first forget gate: it acts on the zero cell state
    assert [v.op for v in pcsim.trace(module, *inputs).vertices].count("sigmoid") == 3 * 4 * 2 - 2
    _, module, inputs, _ = reduced("densenet_block")
    assert sum(v.op == "cat" for v in pcsim.trace(module, *inputs).vertices) == 3 + 1


def test_residual_mlp_levels_with_exactly_one_identity_vertex():
    _, module, inputs, _ = reduced("residual_mlp")
    graph = pcsim.trace(module, *inputs)
    assert not graph.is_levelled
    levelled = graph.level()
    assert levelled.n_identity == 1 and levelled.is_levelled
    (ident,) = levelled.identity_vertices
    assert levelled[ident].parents == ("tanh",) and levelled.children[ident] == ("add",)


@pytest.mark.parametrize("name", ["lstm", "gru"])
def test_recurrent_models_built_for_images_read_their_rows_as_steps(name):
    """`pcsim train lstm --data digits` hands (batch, C, H, W) images to the model built for them."""
    spec, module, inputs, target = reduced(name, input_shape=(2, 3, 4), n_classes=3, batch=2)
    (x,) = inputs
    assert x.shape == (2, 2, 3, 4)
    rows = x.permute(0, 2, 1, 3).reshape(2, 3, 8)  # step t: row t of every channel
    rebuilt = reduced(name, input_shape=(3, 8), n_classes=3, batch=2)[1]
    rebuilt.load_state_dict(module.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(module(x), rebuilt(rows), rtol=0, atol=0)
    for fused in (False, True):
        report = pcsim.check(module, inputs, target, rule="zil", loss=spec.loss, fused=fused)
        assert report.max_rel_diff <= TOL, report.table(name)
