"""`trace(module, *example_inputs) -> Graph`: capture with torch.export, one vertex per ATen call.

See `export.py` (the module as a core ATen program) and `build.py` (which nodes are populations).
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Iterable, Iterator

import torch
from torch import nn

from pcsim.capture.build import Builder
from pcsim.capture.export import export_program
from pcsim.errors import InputError, TraceError
from pcsim.graph.argument import checked, described
from pcsim.graph.ir import LITERALS, Graph
from pcsim.graph.provenance import user_stacklevel
from pcsim.ops.local import records_autograd
from pcsim.ops.table import RECURRENT_LAYERS


def fused_types(fused: bool | Iterable[type[nn.Module]]) -> frozenset[type[nn.Module]]:
    """`trace`'s `fused` argument as the set of recurrent layer types to keep whole, checked."""
    if isinstance(fused, bool):
        return frozenset(RECURRENT_LAYERS) if fused else frozenset()
    if isinstance(fused, type):
        fused = (fused,)
    if isinstance(fused, str) or not isinstance(fused, Iterable):
        raise InputError(f"trace(fused=...) takes True or module types such as (nn.LSTM, nn.GRU), got {fused!r}")
    types = frozenset(fused)
    for t in types:
        if t not in RECURRENT_LAYERS:
            known = ", ".join(f"nn.{k.__name__}" for k in RECURRENT_LAYERS)
            raise InputError(f"trace(fused=...) got {getattr(t, '__name__', t)!r}; the module types that can be "
                             f"fused into one vertex are {known}")
    return types


def _check_arity(module: nn.Module, n_inputs: int) -> None:
    """One example input per positional argument of forward() that has no default."""
    try:
        params = list(inspect.signature(module.forward).parameters.values())
    except (TypeError, ValueError):  # a builtin forward: export will say
        return
    if any(p.kind == p.VAR_POSITIONAL for p in params):
        return
    keyword = [p.name for p in params if p.kind == p.KEYWORD_ONLY and p.default is p.empty]
    if keyword:  # torch.export's own message named inspect.py, not the user's forward
        raise InputError(f"{type(module).__name__}.forward needs keyword-only argument(s) {', '.join(keyword)}, and "
                         "pcsim passes example inputs by position: give them defaults, or trace a wrapper whose "
                         f"forward takes them by position and calls the module with {keyword[0]}={keyword[0]}")
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    required = [p for p in positional if p.default is p.empty]
    if not len(required) <= n_inputs <= len(positional):
        takes = f"{len(required)}" if len(required) == len(positional) else f"{len(required)} to {len(positional)}"
        raise InputError(f"{type(module).__name__}.forward takes {takes} input(s) "
                          f"({', '.join(p.name for p in positional)}), got {n_inputs} example input(s)")


def _tensors(name: str, value, depth: int = 2) -> Iterator[tuple[str, object]]:
    """`value` and the items of the plain lists, tuples and dicts it holds (two levels), named `ws[0]`, `d['k']`."""
    yield name, value
    items = (enumerate(value) if isinstance(value, list | tuple) else value.items() if isinstance(value, dict)
             else ())
    for key, item in items if depth else ():
        yield from _tensors(f"{name}[{key!r}]", item, depth - 1)


def attribute_tensors(module: nn.Module) -> Iterator[tuple[str, object]]:
    """Every module's attributes, and the items of plain lists and dicts among them, by qualified name
    (`block.cache['k']`); nn.Module's own tables (`_parameters`, `_buffers`, hooks) are not looked into."""
    for path, sub in module.named_modules():
        for name, value in vars(sub).items():
            for attr, item in _tensors(name, value) if name[:1] != "_" else [(name, value)]:
                yield (f"{path}.{attr}" if path else attr), item


def _refuse_kept_history(module: nn.Module, program: torch.export.ExportedProgram) -> None:
    """A tensor computed from parameters in an earlier call and kept (an eval-mode cache: Hugging Face's LeViT keeps
    its attention biases so) is read by torch.export as a constant: no update would pass through it, where backprop
    follows its history (the update of the parameter behind it was silently zero)."""
    kept = [t for t in program.constants.values() if isinstance(t, torch.Tensor) and t.grad_fn is not None]
    if not kept:
        return
    names = {id(v): name for name, v in attribute_tensors(module) if isinstance(v, torch.Tensor)}
    where = names.get(id(kept[0]), "a tensor attribute")
    raise TraceError(f"{type(module).__name__}.{where} was computed from parameters in an earlier call and kept (a "
                     "cache): forward() reads it as it is, so torch.export takes it for a constant and no update "
                     "would pass through it, where backprop follows its history. Empty the cache before tracing "
                     "(a Hugging Face model empties its caches in module.train()), or compute it in forward()")


def _refuse_hidden_leaves(module: nn.Module) -> None:
    """A tensor attribute that requires grad but is not a registered parameter would be captured as a
    constant and get no update: refused rather than silently left out. So is one in a plain list or dict
    (`self.ws = [nn.Parameter(...)]` where an nn.ParameterList registers it)."""
    params = {id(p) for p in module.parameters()}
    for where, value in attribute_tensors(module):
        if isinstance(value, torch.Tensor) and value.requires_grad and value.is_leaf and id(value) not in params:
            raise TraceError(f"{type(module).__name__}.{where} is a tensor that requires grad but is not a "
                             "registered parameter: pcsim (like an optimiser) would never update it. Wrap it "
                             "in nn.Parameter (a list or dict of them in nn.ParameterList or nn.ParameterDict), "
                             "or detach it if it is a constant.")


def _refuse_script_modules(module: nn.Module) -> None:
    """torch.export cannot run TorchScript: a scripted or traced submodule fails inside torch with a
    SpecViolationError about its state dict, naming neither the submodule nor the cause."""
    for path, sub in module.named_modules():
        if isinstance(sub, torch.jit.ScriptModule):
            where = f"submodule {path!r} of {type(module).__name__}" if path else type(module).__name__
            raise TraceError(f"{where} is a TorchScript module (torch.jit.script or torch.jit.trace), which "
                             "torch.export cannot capture: pass the plain nn.Module it was made from (a scripted "
                             "function called in forward() is fine)")


def _warn_gradient_hooks(module: nn.Module) -> None:
    """A hook on a parameter's gradient (`p.register_hook(fn)`, gradient clipping) or a module's backward hook
    (`register_full_backward_hook`, which may rewrite the gradient passed on) changes what backprop leaves in
    `.grad`; pcsim's updates are dL/dtheta itself, before any hook."""
    hooked = [n for n, p in module.named_parameters() if getattr(p, "_backward_hooks", None)]
    if hooked:
        warnings.warn(f"{type(module).__name__}: parameter(s) {', '.join(hooked)} have gradient hooks; pcsim's "
                      "updates are dL/dtheta before them, where backprop's .grad is what the hooks return",
                      stacklevel=user_stacklevel())
    hooked = [n or type(module).__name__ for n, m in module.named_modules()
              if m._backward_hooks or m._backward_pre_hooks]
    if hooked:  # the global ones (nn.modules.module.register_module_full_backward_hook) are the caller's own
        warnings.warn(f"{type(module).__name__}: module(s) {', '.join(hooked)} have backward hooks; pcsim's updates "
                      "are dL/dtheta without them, where backprop's .grad follows what the hooks return",
                      stacklevel=user_stacklevel())


def _warn_unread(graph: Graph, module: nn.Module) -> None:
    unread = [n for n, p in module.named_parameters() if p.requires_grad and not graph.users.get(n)]
    if unread:
        shown = ", ".join(unread[:6]) + (f" and {len(unread) - 6} more" if len(unread) > 6 else "")
        warnings.warn(f"{type(module).__name__}: parameter(s) {shown} are read by no vertex on these inputs; "
                      "their updates are zero, as autograd's gradients would be", stacklevel=user_stacklevel())


@checked
@records_autograd
def trace(module: nn.Module, *example_inputs: torch.Tensor,
          fused: bool | Iterable[type[nn.Module]] = False) -> Graph:
    """Capture `module` on `example_inputs` (one tensor per forward argument) as a graph of populations.

    An argument given as None, a number or a flag is specialised to that value (`Graph.literal_inputs`): the
    rules take the same value in its place.

    The graph is specialised to the example inputs' shapes: trace again for another batch size.
    `fused`: recurrent layer types (of `pcsim.RECURRENT_LAYERS`: nn.RNN, nn.LSTM, nn.GRU), or True for
    all of them, kept as one vertex per layer running torch's fused kernel, instead of one vertex per
    gate and time step.
    """
    if not isinstance(module, nn.Module):
        raise TypeError(f"trace() needs a torch.nn.Module, got {described(module)}")
    types = fused_types(fused)
    for i, x in enumerate(example_inputs):
        if not isinstance(x, (torch.Tensor, *LITERALS)) and x is not None:
            raise InputError(f"example input #{i} must be a tensor (or None, a number, a flag), got {type(x).__name__}")
    _check_arity(module, len(example_inputs))
    _refuse_script_modules(module)
    _refuse_hidden_leaves(module)
    _warn_gradient_hooks(module)
    try:
        program, counters = export_program(module, tuple(example_inputs), types)
        _refuse_kept_history(module, program)
        graph = Builder(module, program, tuple(example_inputs), counters).run()
    except TraceError as e:
        hint = _dtype_hint(module, example_inputs)
        if not hint:
            raise
        raise TraceError(f"{e}\n{hint}") from None
    _warn_unread(graph, module)
    return graph


def _dtype_hint(module: nn.Module, example_inputs) -> str:
    """Why a capture may have failed, when the example inputs' floating dtype is not the parameters' (torch says
    'mat1 and mat2 must have the same dtype' inside the op, naming neither the inputs nor the module)."""
    params = {p.dtype for p in module.parameters() if p.is_floating_point()}
    inputs = {x.dtype for x in example_inputs if isinstance(x, torch.Tensor) and x.is_floating_point()}
    if len(params) != 1 or not inputs or inputs <= params:
        return ""
    (param,) = params
    given = ", ".join(sorted(str(d).replace("torch.", "") for d in inputs))
    wanted = str(param).replace("torch.", "")
    return (f"(the example inputs are {given}, the module's parameters {wanted}: convert the inputs, "
            f"x.to(torch.{wanted}), or the module, module.to(torch.{given.split(', ')[0]}))")
