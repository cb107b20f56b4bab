"""`linearise`: a vertex selecting part of its parent pulls back without autograd (`Placement`), as autograd does."""

import pytest
import torch
from torch import nn

import pcsim
from pcsim.algorithms.problem import Problem
from pcsim.algorithms.sums import Sums
from pcsim.ops.local import Autograd, Placement, call, linearise, pull_back
from pcsim.ops.table import entry


class Chunks(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(5, 12)

    def forward(self, x):
        a, b, c = self.fc(x).chunk(3, -1)
        return a * b + c


class Slices(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(5, 12)

    def forward(self, x):
        h = torch.tanh(self.fc(x))
        return h[:, 1:5] + h[:, ::3] + h[:, 0:1]


class Gather(nn.Module):  # advanced indexing copies: autograd's pullback stays
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(5, 6)
        self.register_buffer("idx", torch.tensor([0, 2, 2, 5]))

    def forward(self, x):
        return self.fc(x)[:, self.idx]


def _selection_vjps(module):
    x = torch.randn(3, 5, generator=torch.Generator().manual_seed(0))
    graph = pcsim.trace(module, x)
    problem = Problem.build(graph, (x,), torch.zeros(graph[graph.outputs[0]].shape))
    values = problem.feedforward()
    out = []
    for v in graph.vertices:
        if entry(v.op).selection and v.name in values:
            parents = [values[p] if p in values else problem.clamped[p] for p in v.parents]
            track = [p in values for p in v.parents]
            out.append((v, parents, track, linearise(v, parents, problem.params, graph.constants, track, True)))
    return problem, out


@pytest.mark.parametrize("module", [Chunks, Slices])
def test_selections_pull_back_to_autograds_vjp(module):
    torch.manual_seed(0)
    problem, found = _selection_vjps(module())
    assert found and all(isinstance(lin, Placement) for *_, lin in found)
    for v, parents, track, lin in found:
        slot = track.index(True)
        cot = torch.randn(v.shape)
        (terms, own), = pull_back([(lin, cot, True, True)])
        assert own == {} and all(t is None for i, t in enumerate(terms) if i != slot)
        sums = Sums()
        sums.add("parent", terms[slot])
        leaf = parents[slot].clone().requires_grad_(True)
        args = [leaf if i == slot else p for i, p in enumerate(parents)]
        (expected,) = torch.autograd.grad(call(v, args, problem.params, problem.graph.constants), leaf, cot)
        assert torch.equal(sums["parent"], expected), v.name
        assert torch.equal(lin.mu, call(v, parents, problem.params, problem.graph.constants))


def test_copies_and_untracked_parents_keep_autograds_pullback():
    torch.manual_seed(0)
    _, found = _selection_vjps(Gather())
    assert found and all(isinstance(lin, Autograd) for *_, lin in found)
    _, found = _selection_vjps(Chunks())
    v, parents, track, _ = found[0]
    assert Placement.of(v, parents, [False] * len(track), {}, {}) is None  # no latent parent: nothing to place
