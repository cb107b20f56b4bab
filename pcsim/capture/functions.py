"""What backprop does in backward that the capture loses: custom `autograd.Function` backwards, gradient hooks.

torch.export records what a Function's `forward` computes, never its `backward`, and pcsim pulls each error
back through the captured calls' own derivatives. That is backprop's gradient only where the custom backward
is forward's derivative (a memory-saving Swish); a straight-through estimator, a gradient reversal or a clipped
gradient would silently get another. So a Function seen while exporting is run once more on the example inputs,
and its backward is compared with autograd through its forward, at cotangents of three scales (a derivative is
linear in it, a clip is not), on the example arguments and on others (scaled, sign-flipped, random at several
scales); one that differs is refused at the user's line. A backward that differs only on values none of those
reach is not seen: a sample of points, not a proof.
A gradient hook registered in forward (`h.register_hook(fn)`) is refused there too: it runs in backward alone.
Python attributes forward() changes (a step counter) are recorded while exporting, for a warning: torch.export
restores them after its one run.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Iterator

import torch
from torch import nn

from pcsim.capture.patching import patched
from pcsim.errors import TraceError, first_line
from pcsim.numerics import relative_difference, tolerance

_Function = torch.autograd.Function
_APPLY = _Function.__dict__["apply"].__func__  # torch's own (`patched`)


def _ctx_free(cls: type) -> bool:
    """Whether `cls.forward` takes its arguments alone (with a `setup_context`), not `(ctx, *args)`."""
    return cls.setup_context is not _Function.setup_context


def _positional(cls: type, args: tuple, kwargs: dict) -> tuple:
    """`cls.apply`'s arguments given by keyword, in forward's order (its defaults filled in)."""
    ctx_free = _ctx_free(cls)
    try:
        bound = inspect.signature(cls.forward).bind(*(() if ctx_free else (None,)), *args, **kwargs)
    except TypeError as e:
        raise TraceError(f"{cls.__qualname__}.apply is given arguments its forward does not take: {e}") from None
    bound.apply_defaults()
    if bound.kwargs:
        raise TraceError(f"{cls.__qualname__} is a torch.autograd.Function applied with the keyword-only "
                         f"argument(s) {', '.join(bound.kwargs)}: pcsim checks a Function's backward against its "
                         "forward's derivative on positional arguments; pass them by position")
    return bound.args if ctx_free else bound.args[1:]


_REENTRANT_CHECKPOINT = torch.utils.checkpoint.CheckpointFunction


def _applying(hook) -> contextlib.AbstractContextManager:
    """Every `Function.apply` runs through `hook(cls, args)` (which returns the outputs) while inside."""
    def apply(cls, *args, **kwargs):
        if cls is _REENTRANT_CHECKPOINT:
            # its backward exists only where an input needs a gradient, and torch.export captured the code after it
            # under no_grad too: every rule's update of the layers that follow was zero, silently
            raise TraceError("torch.utils.checkpoint(..., use_reentrant=True) cannot be captured: its gradient "
                             "depends on whether its inputs require grad (where none does, backprop leaves the "
                             "checkpointed layers without one), and torch.export records the code after it without "
                             "gradients. Pass use_reentrant=False: the same values and gradients as without "
                             "checkpointing")
        if cls.__module__.startswith("torch."):  # torch's own Functions are backprop's gradient
            return _APPLY(cls, *args, **kwargs)
        if kwargs:  # `apply(x, beta=3.0)`, which torch passes on: the hook takes forward's arguments in order
            args = _positional(cls, args, kwargs)
        return hook(cls, args)
    return patched(_Function, "apply", apply, _APPLY, classmethod)


_REGISTER_HOOK = torch.Tensor.register_hook


def _refuse_hook(tensor, hook):
    raise TraceError("a gradient hook (Tensor.register_hook) is registered in forward(): it acts in backward alone, "
                     "which torch.export does not capture, so pcsim's updates would not pass through it as "
                     "backprop's gradient does. Register it outside forward(), or write its effect into forward")


_RUN_BACKWARD = torch.autograd._engine_run_backward  # what torch.autograd.grad and .backward() call, torch's own


def _refuse_derivative(*args, **kwargs):
    # on fake tensors torch.export's own failure blames a lifted constant, naming no line of the user's
    raise TraceError("forward() takes a derivative (torch.autograd.grad, .backward(), torch.func.grad, vjp or jacrev): "
                     "torch.export captures no backward pass, so a model whose output is a gradient (a Hamiltonian or "
                     "energy network, a gradient penalty) cannot be captured. Compute that derivative outside "
                     "forward(), or write it out with differentiable ops")


@contextlib.contextmanager
def seen_functions(seen: list[type]) -> Iterator[None]:
    """Record the custom Functions applied while exporting into `seen`; refuse a gradient hook registered meanwhile,
    and a derivative taken meanwhile."""
    def record(cls, args):
        seen.append(cls)
        return _APPLY(cls, *args)
    with (patched(torch.Tensor, "register_hook", _refuse_hook, _REGISTER_HOOK),
          patched(torch.autograd, "_engine_run_backward", _refuse_derivative, _RUN_BACKWARD), _applying(record)):
        yield


class _Context:
    """What a Function's `forward(ctx, ...)` may call on its context, doing nothing: forward is run here for
    its values and autograd's derivative of them."""

    needs_input_grad = ()

    def __getattr__(self, name):
        return lambda *args, **kwargs: None


def _matches_at(cls: type, args: tuple, domain_only: bool = False) -> bool:
    """Custom backward == autograd through forward, on these arguments and a fixed random cotangent.
    With `domain_only`, cotangents' results that are not finite are not compared (arguments outside the domain)."""
    leaves = [a.detach().requires_grad_(True) if isinstance(a, torch.Tensor) and a.is_floating_point() else a
              for a in args]
    tracked = [a for a in leaves if isinstance(a, torch.Tensor) and a.requires_grad]
    def own():  # each run its own copies: a Function changing its input in place (ctx.mark_dirty) may not
        # change a leaf, nor the other run's input
        return [a.clone() if isinstance(a, torch.Tensor) and a.requires_grad else a for a in leaves]
    with torch.enable_grad():
        custom = _APPLY(cls, *own())
        plain = cls.forward(*own()) if _ctx_free(cls) else cls.forward(_Context(), *own())
    outs = custom if isinstance(custom, tuple) else (custom,)
    plains = plain if isinstance(plain, tuple) else (plain,)
    pairs = [(o, p) for o, p in zip(outs, plains, strict=False) if isinstance(o, torch.Tensor)
             and o.is_floating_point() and o.requires_grad]
    if not pairs or not tracked:
        return True
    gen = torch.Generator(device=pairs[0][0].device).manual_seed(0)
    cots = [torch.randn(o.shape, dtype=o.dtype, device=o.device, generator=gen) for o, _ in pairs]
    differentiable = [(p, c) for (_, p), c in zip(pairs, cots, strict=True) if p.requires_grad]
    limit = tolerance(tracked[0].dtype) ** 0.5  # two ways to the same derivative: far apart or not at all
    # a derivative is linear in the cotangent: a backward that clips or normalises the gradient (at a threshold
    # the unit cotangent stays below) shows at a large or a small one
    big = min(1e6, torch.finfo(tracked[0].dtype).max ** 0.25)
    for scale in (1.0, big, 1.0 / big):
        want = torch.autograd.grad([o for o, _ in pairs], tracked, [c * scale for c in cots], allow_unused=True,
                                   retain_graph=True)
        got = (torch.autograd.grad([p for p, _ in differentiable], tracked, [c * scale for _, c in differentiable],
                                   allow_unused=True, retain_graph=True) if differentiable else [None] * len(tracked))
        for w, g in zip(want, got, strict=True):
            w = torch.zeros_like(tracked[0]) if w is None else w
            g = torch.zeros_like(w) if g is None else g
            if domain_only and not (torch.isfinite(w).all() and torch.isfinite(g).all()):
                continue  # outside the Function's domain (a log of a negative): nothing to compare there
            if w.shape != g.shape or relative_difference(g, w) > limit:
                return False
    return True


# The example values scaled and with flipped signs, then random values at several scales: a backward that differs
# from forward's derivative only away from the examples (a straight-through sign whose window |x| <= 1 no example
# falls in) is seen there, where the rules' values go once they move.
_SCALES = (0.01, 0.3, 3.0, 100.0)


def _elsewhere(args: tuple) -> Iterator[tuple]:
    """The Function's arguments moved: its floating tensors changed, everything else as given."""
    floating = [i for i, a in enumerate(args) if isinstance(a, torch.Tensor) and a.is_floating_point()]
    gen = torch.Generator().manual_seed(0)

    def moved(change):
        out = [a.clone() if isinstance(a, torch.Tensor) else a for a in args]  # a Function may change them
        for i in floating:
            out[i] = change(args[i].detach())
        return tuple(out)
    for s in _SCALES:
        yield moved(lambda a, s=s: a * s)
        yield moved(lambda a, s=s: -a * s)
        yield moved(lambda a, s=s: s * torch.randn(a.shape, generator=gen, dtype=a.dtype).to(a.device))


def _forward_derivative_matches(cls: type, args: tuple) -> bool:
    """Custom backward == autograd through forward at the example arguments and at others. Arguments the
    Function's own code fails on, other than the examples, are outside its domain."""
    if not _matches_at(cls, args):
        return False
    for other in _elsewhere(args):
        try:
            if not _matches_at(cls, other, domain_only=True):
                return False
        except Exception:  # noqa: BLE001, S112 - the Function refuses these values (its domain): not compared
            continue
    return True


_SETATTR = nn.Module.__setattr__
_SCALARS = (int, float, bool)


def changed_attributes(changed: dict) -> contextlib.AbstractContextManager:
    """Record into `changed`, by (module, name), the first change of each Python number or flag attribute of a
    module meanwhile, as (old, new): a step counter (`self.calls += 1`). torch.export restores them after its one
    run of forward(), and the graph holds what that run computed, with the values it read then."""
    def record(self, name, value):
        old = self.__dict__.get(name)
        if type(old) in _SCALARS and type(value) in _SCALARS and old != value and not name.startswith("_"):
            changed.setdefault((self, name), (old, value))
        _SETATTR(self, name, value)
    return patched(nn.Module, "__setattr__", record, _SETATTR)  # another thread's modules are not the trace's


def refuse_custom_backwards(module: nn.Module, inputs: tuple) -> None:
    """Run `module` on `inputs`, checking each custom Function's backward against its forward's derivative;
    a `TraceError` from the first that differs (raised inside forward(), so it is reported at the user's line)."""
    def check(cls, args):
        try:
            same = _forward_derivative_matches(cls, args)
        except Exception as e:  # noqa: BLE001 - the Function's own code failed: said as such, not as a bad input
            # Hugging Face's Reformer: its reversible layers' backward asserts training mode, and its forward
            # cannot be run twice on the same arguments
            raise TraceError(f"{cls.__qualname__} is a torch.autograd.Function, whose backward torch.export does not "
                             "capture: pcsim runs it once on the example inputs, with its forward under autograd, "
                             "to check that the backward is the forward's derivative, and that run failed: "
                             f"{type(e).__name__}: {first_line(e)}. Without that check pcsim cannot tell that "
                             "its updates would be backprop's; write the Function's work with differentiable "
                             "ops, or check that backprop itself runs on the module") from None
        if not same:
            raise TraceError(f"{cls.__qualname__} is a torch.autograd.Function whose backward is not the derivative "
                             "of its forward (a straight-through estimator, a gradient reversal, a clipped "
                             "gradient): torch.export "
                             "captures forward alone, so pcsim cannot follow that backward. Write it with "
                             "differentiable ops (a straight-through round is x + (x.round() - x).detach())")
        # applied again on the arguments themselves: the check's outputs come from detached copies, which would
        # cut an outer Function, whose forward applies this one, off from its inputs (it was refused, wrongly),
        # and leave an input the Function changes in place (ctx.mark_dirty) unchanged for the code after it
        return _APPLY(cls, *args)
    with _applying(check), torch.no_grad():
        module(*inputs)
