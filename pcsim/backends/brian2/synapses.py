"""What every rendered op is made of: `Edge`s (one projection per parent population) and `Offset`s
(per-neuron constants and biases), and the helpers every renderer shares (data only; no Brian2 import)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from pcsim.errors import UnsupportedOpError
from pcsim.graph.ir import Computed, ParamArg, ParentArg, Vertex, compile_template, template_slots

WHY = "it cannot be written as Brian2 equations"
PRODUCT = "a product of two variables; a synapse carries one presynaptic variable"


@dataclass
class Edge:
    parent: int  # parent position in vertex.parents
    i: np.ndarray
    j: np.ndarray
    forward: str  # per-synapse contribution to mu, in x_pre (and weight)
    backward: str  # per-synapse contribution to the parent's feedback, in err_post (and x_pre, weight)
    weight: np.ndarray | None = None
    param: str | None = None  # a plastic weight's parameter (its Hebbian term is err_post * x_pre) ...
    kidx: np.ndarray | None = None  # ... and each synapse's flat index into it


def edge(parent: int, i, j, weight=None, param=None, kidx=None) -> Edge:
    """Synapses i -> j carrying weight * x_pre forward and weight * err_post back (no weight: all ones, fixed)."""
    if weight is None or (param is None and bool(np.all(weight == 1.0))):
        return Edge(parent, i, j, "x_pre", "err_post")
    return Edge(parent, i, j, "weight * x_pre", "weight * err_post", weight, param, kidx)


@dataclass
class Offset:
    """Per-neuron additive term of mu: a bias (with its parameter) or a constant."""

    values: np.ndarray
    param: str | None = None
    index: np.ndarray | None = None


def bind(vertex: Vertex, names: tuple[str, ...], defaults: dict):
    """The call's arguments by name (positional first, then keywords, then defaults)."""
    out = dict(defaults)
    out.update(zip(names, vertex.args, strict=False))
    out.update(dict(vertex.kwargs))
    return out


def unsupported(vertex: Vertex, why: str) -> UnsupportedOpError:
    return UnsupportedOpError(f"the brian2 backend cannot render {vertex.describe()}: {why}")


def single_parent(vertex: Vertex, arg) -> None:
    if arg != ParentArg(0) or len(vertex.parents) != 1:
        raise unsupported(vertex, f"expected one population as its first argument; {WHY}")


def ints(v, n: int) -> tuple[int, ...]:
    """An int, or a sequence of one or n ints (an op's stride, padding...), as n ints."""
    if isinstance(v, int):
        return (int(v),) * n
    v = tuple(int(x) for x in v)
    return v * n if len(v) == 1 else v


def size(shape) -> int:
    return int(np.prod(shape, dtype=np.int64))


def ids(shape) -> torch.Tensor:
    """Neuron ids 0 .. n - 1 in the population's shape."""
    return torch.arange(size(shape), dtype=torch.int64).reshape(tuple(shape))


def flat_ids(t: torch.Tensor) -> np.ndarray:
    return t.reshape(-1).numpy().astype(np.int64)


def broadcast_ids(shape, to) -> np.ndarray:
    """Which neuron of a population of `shape` each neuron of `shape` `to` reads when broadcast to it."""
    return flat_ids(torch.broadcast_to(ids(shape), tuple(to)))


def to_numpy(t: torch.Tensor) -> np.ndarray:
    return t.detach().to(torch.float64).reshape(-1).cpu().numpy()


@dataclass
class Weight:
    """A parameter slot as the synapses see it: its values, the parameter their accumulators add to, and
    each value's flat index into that parameter (the identity for a parameter, a permutation for a tied W.T)."""

    value: torch.Tensor
    param: str
    index: np.ndarray

    def edge(self, i, j, k) -> Edge:
        """Plastic synapses i -> j, synapse s holding entry k[s] of the weight."""
        return edge(0, i, j, to_numpy(self.value)[k], self.param, self.index[k])

    def offsets(self, k) -> list[Offset]:
        """The weight as a per-neuron bias, neuron n holding entry k[n]."""
        return [Offset(to_numpy(self.value)[k], self.param, self.index[k])]


def weight_of(vertex: Vertex, slot, params, constants, what: str) -> Weight | None:
    """A parameter, or an index map of one parameter (a transpose, permute, view or slice of it: a tied
    `W.T`), with each entry's index into the parameter, read by applying the map to the parameter's own
    flat indices. Anything else (a population, a constant, a weight-normed `g v / |v|`) is refused."""
    if slot is None:
        return None
    if isinstance(slot, ParamArg):
        value = params[slot.name].detach()
        return Weight(value, slot.name, np.arange(value.numel(), dtype=np.int64))
    inner = list(template_slots(slot)) if isinstance(slot, Computed) else []
    names = {s.name for s in inner if isinstance(s, ParamArg)}
    if len(names) != 1 or any(isinstance(s, ParentArg) for s in inner):
        raise unsupported(vertex, f"its {what} is not a module parameter or an index map of one (a population or "
                                   f"constant as a {what} would make a synapse multiply two variables); {WHY}")
    (name,) = names
    fn = compile_template(slot)
    p = params[name].detach()
    value = fn((), params, constants)
    if isinstance(value, torch.Tensor):
        value = value.detach()
        # the map applied to the parameter's ids, shifted by S the second time: every entry must move by S
        shifted = ids(p.shape).double() + 1.0
        shift = float(p.numel() + 1)
        try:
            a, b = fn((), {**params, name: shifted}, constants), fn((), {**params, name: shifted + shift}, constants)
        except (RuntimeError, TypeError, ValueError):
            a = b = None
        if (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.shape == value.shape
                and bool(((b - a) == shift).all()) and bool((a == torch.round(a)).all())):
            index = (a.reshape(-1) - 1).to(torch.int64)
            if bool((index >= 0).all()) and bool((p.reshape(-1)[index] == value.reshape(-1)).all()):
                return Weight(value, name, index.numpy())
    label = slot.label or getattr(slot.fn, "__name__", "a function")
    raise unsupported(vertex, f"its {what} is {label} of parameter '{name}', which is not an index map "
                               f"of it (a transpose, view or slice): its synapses could not share the "
                               f"parameter's entries; {WHY}")
