"""The ties of a captured graph to its module (`pcsim.graph.ties`), recorded at the trace: the module tree and
each parameter's owner by weak references, the parameters as traced, the normalisations whose statistics follow
the mode, and which module tensors (buffers, frozen parameters) the program reads as constants."""

from __future__ import annotations

import weakref

import torch
import torch.fx as fx
from torch import nn
from torch.export.graph_signature import InputKind

from pcsim.capture.tidy import computed_from
from pcsim.graph.ir import ConstArg
from pcsim.graph.ties import ModuleTies, Source, TracedParam, Watch, global_hooks, where

aten = torch.ops.aten
# calls that read their tensor argument's shape and dtype only: a constant made by them changes with no value
_SHAPE_ONLY = {aten.zeros_like.default, aten.ones_like.default, aten.empty_like.default, aten.full_like.default,
               aten.new_zeros.default, aten.new_ones.default, aten.new_empty.default, aten.new_full.default,
               aten.sym_size.int, aten.sym_numel.default, aten.sym_stride.int}


def _folded_from(graph: fx.Graph, kind: dict) -> set[fx.Node]:
    """The placeholders whose values the calls folded into constants (`kind` ConstArg) were computed from."""
    seen = computed_from([n for n in graph.nodes if n.op == "call_function" and isinstance(kind.get(n), ConstArg)],
                         lambda n: n.op == "call_function" and n.target not in _SHAPE_ONLY)
    return {n for n in seen if n.op == "placeholder"}


def _sources(module: nn.Module, program: torch.export.ExportedProgram, kind: dict,
                   values: dict) -> tuple[Source, ...]:
    """Each buffer and frozen parameter the program reads as a constant, as it is now (at the trace)."""
    folded = _folded_from(program.graph_module.graph, kind)
    placeholders = [n for n in program.graph_module.graph.nodes if n.op == "placeholder"]
    sources = []
    for n, spec in zip(placeholders, program.graph_signature.input_specs, strict=True):
        value = values.get(n)
        if spec.kind not in (InputKind.BUFFER, InputKind.PARAMETER) or not isinstance(kind.get(n), ConstArg):
            continue  # a trainable parameter is read live, and checked by its shape and dtype
        path, _, attr = spec.target.rpartition(".")
        try:
            owner = module.get_submodule(path)
        except AttributeError:
            continue
        if getattr(owner, attr, None) is not value or not isinstance(value, torch.Tensor):
            continue
        copy = value.detach().clone() if n in folded else None
        what = "buffer" if spec.kind == InputKind.BUFFER else "frozen parameter"
        sources.append(Source(f"{what} '{spec.target}'", weakref.ref(owner), attr, where(value), copy))
    return tuple(sources)


def module_ties(module: nn.Module, program: torch.export.ExportedProgram, kind: dict, values: dict,
                counters: frozenset = frozenset()) -> ModuleTies:
    """The ties of the graph captured from `module` (`program`, with each node's `kind` and example `values`).
    `counters`: the (module id, attribute) that forward() itself changes (warned about at the trace), left out of
    the settings: each call of the module changes them again."""
    def own(m):
        return Watch.of(m, frozenset(a for i, a in counters if i == id(m)))

    modes = tuple((path or type(module).__name__, weakref.ref(m), m.training) for path, m in module.named_modules()
                  if isinstance(m, nn.modules.batchnorm._NormBase) and m.track_running_stats)
    # checked at every rule call, so kept as direct references (not walked by get_submodule)
    edges = tuple((f"{path}.{attr}" if path else attr, weakref.ref(m), attr, weakref.ref(child), own(child))
                  for path, m in module.named_modules() for attr, child in m._modules.items() if child is not None)
    params, owners = [], []
    for name, p in module.named_parameters():
        path, _, attr = name.rpartition(".")
        params.append(TracedParam(name, not p.requires_grad, tuple(p.shape), p.dtype))
        owners.append((weakref.ref(module.get_submodule(path)), attr))
    return ModuleTies(tuple(params), weakref.ref(module), edges, tuple(owners), modes,
                      _sources(module, program, kind, values), own(module), global_hooks())
