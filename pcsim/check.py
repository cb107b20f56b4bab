"""`check`: run a PC rule on a module and compare every update with torch autograd's gradient.

The oracle is autograd on the module itself (not on pcsim's graph), so a tracing mistake cannot
hide behind a matching mistake in pcsim's own BP.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils import _pytree as pytree  # the flattening torch.export applies to outputs

from pcsim.algorithms.losses import get_loss
from pcsim.algorithms.problem import Problem, as_losses, as_targets, as_tuple
from pcsim.capture import attribute_tensors, trace
from pcsim.errors import InputError, OracleError, TraceError, first_line
from pcsim.graph import Graph
from pcsim.graph.argument import checked, described
from pcsim.numerics import DTYPES, float_dtype, relative_difference, rounding_floor, tolerance
from pcsim.ops.local import records_autograd
from pcsim.rules import RULES, get  # noqa: F401 - the CLI's --rule choices are RULES' keys


@dataclass(frozen=True)
class ParamDiff:
    max_abs: float
    rel: float  # ||pc - bp|| / ||bp||


@dataclass(frozen=True)
class CheckReport:
    """How far a rule's updates are from autograd's gradients, per parameter and overall."""

    rule: str
    loss: str
    dtype: torch.dtype
    max_abs_diff: float
    max_rel_diff: float
    per_param: dict[str, ParamDiff]
    passed: bool
    tolerance: float
    n_vertices: int
    identity_vertices: int
    seconds: float
    grads: dict[str, torch.Tensor] = field(repr=False, default_factory=dict)
    reference: dict[str, torch.Tensor] = field(repr=False, default_factory=dict)
    graph: Graph | None = field(repr=False, default=None)  # the module as traced (before any levelling)
    computed_in: torch.dtype | None = None  # the coarsest floating dtype forward() computes in

    def to_dict(self, model: str = "") -> dict:
        """The contract's JSON form (`pcsim check --json`)."""
        return {
            "model": model, "rule": self.rule, "loss": self.loss, "dtype": str(self.dtype).replace("torch.", ""),
            "max_abs_diff": self.max_abs_diff, "max_rel_diff": self.max_rel_diff, "passed": self.passed,
            "n_vertices": self.n_vertices, "identity_vertices": self.identity_vertices,
            "params": {n: {"max_abs": d.max_abs, "rel": d.rel} for n, d in self.per_param.items()},
        }

    def table(self, model: str = "") -> str:
        """A readable per-parameter table, headed by the model's name if given."""
        if not isinstance(model, str):  # table(5) stopped in the string concatenation
            raise TypeError(f"table() takes the model's name to head the table, a string; got {model!r}")
        head = (f"{model + ': ' if model else ''}rule {self.rule}, loss {self.loss}, "
                f"{str(self.dtype).replace('torch.', '')}, {self.n_vertices} vertices "
                f"({self.identity_vertices} identity inserted), {self.seconds:.3f} s")
        w = max([len(n) for n in self.per_param] + [9])
        lines = [head, f"  {'parameter':<{w}}  {'shape':<16} {'max |pc-bp|':>12} {'rel':>10}"]
        for n, d in self.per_param.items():
            shape = str(tuple(self.reference[n].shape)) if n in self.reference else ""
            lines.append(f"  {n:<{w}}  {shape:<16} {d.max_abs:>12.3e} {d.rel:>10.3e}")
        verdict = "PASSED" if self.passed else "FAILED"
        lines.append(f"  max relative deviation {self.max_rel_diff:.3e} (tolerance {self.tolerance:.0e}): {verdict}")
        coarse = self.computed_in
        if (not self.passed and coarse is not None and coarse != self.dtype
                and self.max_rel_diff <= tolerance(coarse)):
            lines.append(f"  (forward() computes in {str(coarse).replace('torch.', '')} in places, and the deviation "
                         f"is within that dtype's tolerance {tolerance(coarse):.0e}: the module's own precision)")
        if self.rule in RULES and not RULES[self.rule].exact:
            lines.append(f"  ({self.rule} approximates backprop: the deviation is its distance from BP, not a fault)")
        return "\n".join(lines)


def _copy(module: nn.Module) -> tuple[nn.Module, dict[int, str]]:
    """A deep copy that the caller's module survives, and its detached tensors' storage -> attribute name.
    Tensors a hook computes from parameters (the legacy `weight_norm`'s `weight`) are not leaves, which
    `copy.deepcopy` refuses: they are copied detached, and the hook recomputes them on every call. One that
    forward() reads as it is (a cache kept from an earlier call) would be a constant of both sides."""
    kept = {name: t for name, t in attribute_tensors(module) if isinstance(t, torch.Tensor) and not t.is_leaf}
    memo = {id(t): t.detach().clone() for t in kept.values()}
    return _deepcopy(module, memo), {memo[id(t)].data_ptr(): name for name, t in kept.items()}


# a function wrapped as an attribute (rotary-embedding-torch's `self.apply_rotary_emb = staticmethod(...)`): copy
# shares functions, but refuses these wrappers ("cannot pickle 'staticmethod' object"); they are shared too
_SHARED = (staticmethod, classmethod)


def _deepcopy(module: nn.Module, memo: dict | None = None) -> nn.Module:
    memo = dict(memo or {})
    memo.update({id(v): v for _, v in _attributes(module) if isinstance(v, _SHARED)})
    try:
        return copy.deepcopy(module, memo)
    except Exception as e:  # noqa: BLE001 - named by the attribute at fault, not copy's stack
        culprit = next((name for name, v in _attributes(module) if not _copies(v)), None)
        at = f": {type(module).__name__}.{culprit} cannot be copied" if culprit else ""
        raise InputError(f"check() runs a copy of the module (in the dtype checked, leaving yours as it is), and "
                         f"copy.deepcopy failed{at} ({type(e).__name__}: {first_line(e)}); check the module's "
                         "gradients with pcsim.trace and a rule on the module itself") from None


# nn.Module's own tables (submodules, parameters, hooks): their contents are looked into, or torch's own
_MODULE_TABLES = frozenset(vars(nn.Module()))


def _attributes(module: nn.Module):
    """Every module's own attributes, by qualified name, less nn.Module's tables."""
    for path, sub in module.named_modules():
        for name, value in vars(sub).items():
            if name not in _MODULE_TABLES:
                yield (f"{path}.{name}" if path else name), value


def _copies(value) -> bool:
    if isinstance(value, _SHARED):
        return True
    try:
        copy.deepcopy(value)
    except Exception:  # noqa: BLE001 - any failure is the answer
        return False
    return True


def _cast(t, dtype: torch.dtype):
    return t.to(dtype) if isinstance(t, torch.Tensor) and t.is_floating_point() else t  # None, a number: as given


def _flat_outputs(out) -> tuple[torch.Tensor, ...]:
    """The module's output tensors in the order torch.export flattens them (its pytree): nested tuples,
    lists and dicts (a Hugging Face ModelOutput) in order, None left out (e.g. `(out, (h_n, c_n))` of an
    LSTM, `(out, None)` of attention)."""
    leaves = [t for t in pytree.tree_leaves(out) if t is not None]
    odd = sorted({type(t).__name__ for t in leaves if not isinstance(t, torch.Tensor)})
    if odd:
        raise InputError(f"the module's output must be tensors (in tuples, lists or dicts), got {', '.join(odd)}")
    return tuple(leaves)


class DropoutAsIdentity(TorchFunctionMode):
    """Dropout as pcsim runs it, the identity, for a call that forces it (`F.dropout(x, p, training=True)`
    runs even in eval mode): PC and its oracle must differentiate one deterministic function. It also records
    the floating dtypes the module computes in (`dtypes`) and how many calls it kept from dropping (`dropped`)."""

    def __init__(self):
        super().__init__()
        self.dtypes: set[torch.dtype] = set()
        self.dropped = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func is torch.nn.functional.dropout or func is torch.dropout or func is torch.native_dropout:
            given = {**dict(zip(("input", "p", "training"), args, strict=False)), **(kwargs or {})}  # or p, train
            self.dropped += bool(given.get("p", 0.5) > 0 and given.get("training", given.get("train", True)))
            return (args[0], torch.ones_like(args[0], dtype=torch.bool)) if func is torch.native_dropout else args[0]
        out = func(*args, **(kwargs or {}))
        self.dtypes.update(t.dtype for t in pytree.tree_leaves(out) if isinstance(t, torch.Tensor)
                           and t.is_floating_point())
        return out


@records_autograd
def autograd_gradients(module: nn.Module, inputs, target, loss="mse", dtypes: set | None = None
                       ) -> dict[str, torch.Tensor]:
    """The oracle: autograd on the module itself, losses summed over outputs and batch (dropout as the
    identity, as in every pcsim rule). `dtypes`, if given, receives the floating dtypes forward() computes in."""
    # on copies: a forward that changes its input in place (x.mul_(2), relu_) changed the caller's tensor, and
    # check's rule then ran on the changed one
    inputs = tuple(x.clone() if isinstance(x, torch.Tensor) else x for x in as_tuple(inputs, "inputs"))
    with DropoutAsIdentity() as mode:
        out = module(*inputs)
    if dtypes is not None:
        dtypes.update(mode.dtypes)
    outs = _flat_outputs(out)
    targets = as_targets(target, pytree.tree_flatten(out)[1])  # a dict of targets by the output's keys
    losses = as_losses(loss, len(outs), pytree.tree_flatten(out)[1])
    if len(targets) != len(outs):
        raise InputError(f"the module returns {len(outs)} output(s), got {len(targets)} target(s)")
    losses = tuple(get_loss(lo) for lo in losses)
    total = sum(lo.value(o, lo.as_target(y)) for o, y, lo in zip(outs, targets, losses, strict=True))
    named = dict(module.named_parameters())
    trained = {n: p for n, p in named.items() if p.requires_grad}  # a frozen parameter's gradient is zero
    try:
        grads = dict(zip(trained, torch.autograd.grad(total, list(trained.values()), allow_unused=True), strict=True))
    except RuntimeError as e:  # torch's own stack, from inside its engine, names nothing of the user's
        why = (" (forward() changes in place a tensor its backward needs: a cache or a state buffer, say)"
               if "inplace operation" in str(e) else "")
        raise OracleError(
            f"torch autograd cannot differentiate {type(module).__name__} on these inputs, so there is no oracle to "
            f"check against: {first_line(e)}\nThis is the module's own backward failing{why}, not pcsim's: "
            "`loss.backward()` fails the same way. pcsim's rules differentiate the captured program and do not "
            "need it.") from None
    # a sparse gradient (`nn.Embedding(sparse=True)`) as the dense tensor the rules return
    return {n: torch.zeros_like(p) if grads.get(n) is None else grads[n].to_dense() if grads[n].is_sparse else grads[n]
            for n, p in named.items()}


@checked
@records_autograd
def check(module: nn.Module, inputs, target, rule: str = "zil", loss="mse",
          dtype: torch.dtype = torch.float64, tol: float | None = None, fused: bool | Iterable[type[nn.Module]] = False,
          **rule_kwargs) -> CheckReport:
    """Run `rule` on a copy of `module` in `dtype` (a torch dtype or its name) and compare with autograd's
    gradients; `tol`: the relative tolerance (default `pcsim.tolerance(dtype)`).

    `fused`: module types traced as one vertex per call (`pcsim.trace(..., fused=...)`). Several rules on one
    capture and one oracle: `check_rules`.
    """
    return check_rules(module, inputs, target, [(rule, rule_kwargs)], loss, dtype, tol, fused)[0]


@checked
@records_autograd
def check_rules(module: nn.Module, inputs, target, rules: Sequence[str | tuple[str, dict]], loss="mse",
                dtype: torch.dtype = torch.float64, tol: float | None = None,
                fused: bool | Iterable[type[nn.Module]] = False) -> list[CheckReport]:
    """`check` for several rules on one capture of `module` and one autograd oracle: a report per rule, in the
    order of `rules`, whose items are a rule's name or (its name, its keyword arguments), e.g.
    `["zil", "fa-zil-wavefront", ("zil", {"level": False})]`. Capturing and the oracle are most of a check's
    time on a small model; the rules share them, as they would share one `pcsim.trace`.
    """
    if not isinstance(module, nn.Module):  # a graph failed on 'named_modules' inside the copy
        raise TypeError(f"check() takes the module itself (it compares with autograd on the module), got "
                        f"{described(module)}" + (": a graph goes to the rules, pcsim.zil(graph, inputs, target)"
                                                   if isinstance(module, Graph) else ""))
    dtype = float_dtype(dtype)
    if tol is not None and not 0 <= tol < math.inf:  # a negative or NaN tol failed every check, silently
        raise ValueError(f"tol (the relative tolerance) must be >= 0 and finite, got {tol}")
    specs = [(item, {}) if isinstance(item, str) else item for item in
             (rules if isinstance(rules, Sequence) and not isinstance(rules, str) else ())]
    if not specs or not all(isinstance(s, tuple) and len(s) == 2 and isinstance(s[0], str)
                            and isinstance(s[1], Mapping) for s in specs):
        raise TypeError("rules must be a non-empty list whose items are a rule name or a (name, keyword arguments) "
                        f"pair, got {rules!r}" + (f": [{rules!r}], or check(..., rule={rules!r})"
                                                   if isinstance(rules, str) else ""))
    learning_rules = [get(name) for name, _ in specs]  # an unknown name is refused before any work
    m, detached = _copy(module)
    m = m.to(dtype)
    # pcsim runs dropout as the identity, as in eval mode (nn.Dropout, the dropout inside nn.LSTM or
    # attention, Hugging Face's `dropout if self.training`); both the capture and the oracle run on
    # this copy in eval mode, but for the normalisation layers whose statistics depend on the mode
    training = {sub: sub.training for sub in m.modules()}
    m.eval()
    for sub, was in training.items():
        if isinstance(sub, nn.modules.batchnorm._NormBase):
            sub.train(was)
    inputs = tuple(_cast(x, dtype) for x in as_tuple(inputs, "inputs"))
    if not any(True for _ in m.parameters()):
        raise InputError(f"{type(module).__name__} has no parameters: there is no update to check")
    # the oracle runs on a copy of its own: a forward() that changes the module's state (assigns a buffer, registers
    # a cache) would leave the trace's copy changed since the trace, which the rule then refuses ('trace again')
    oracle = _deepcopy(m)
    graph = trace(m, *inputs, fused=fused)
    stale = [detached[c.data_ptr()] for c in graph.constants.values() if c.data_ptr() in detached]
    if stale:  # the copy lost its history: trace on the module itself refuses it (capture's _refuse_kept_history)
        raise TraceError(f"{type(module).__name__}.{stale[0]} was computed from parameters in an earlier call and "
                         "kept (a cache): forward() reads it as it is, so neither pcsim nor a copy of the module "
                         "would pass an update through it, where backprop on the module follows its history. Empty "
                         "the cache before checking (a Hugging Face model empties its caches in module.train()), or "
                         "compute it in forward()")
    # in the outputs' order, each in its output's dtype: forward() may compute one in another (Hugging Face's loss
    # from labels upcasts the logits to float32), and a target cast to `dtype` was then refused as mismatched
    dtypes = [graph[o].dtype for o in graph.outputs]
    targets = tuple(_cast(y, dtypes[i] if i < len(dtypes) and dtypes[i].is_floating_point else dtype)
                    for i, y in enumerate(as_targets(target, graph.output_spec)))
    target = targets[0] if len(targets) == 1 else targets
    Problem.build(graph, inputs, target, loss)  # validates inputs, targets and losses first
    computed_in: set[torch.dtype] = set()
    reference = autograd_gradients(oracle, inputs, target, loss, computed_in)
    # a module that computes part of itself in a coarser dtype (DINOv2 interpolates its position embeddings in
    # float32) may agree with its oracle to that dtype's rounding only: the report says so, the tolerance stays
    coarsest = max(computed_in & set(DTYPES.values()) | {dtype}, key=lambda d: torch.finfo(d).eps)
    limit = tolerance(dtype) if tol is None else tol
    scale = max((torch.linalg.vector_norm(r.double()).item() for r in reference.values()), default=0.0)
    floor = rounding_floor(scale, dtype)
    losses = ",".join(get_loss(lo).name for lo in as_losses(loss, 1, graph.output_spec))
    reports = []
    for (rule, rule_kwargs), learning_rule in zip(specs, learning_rules, strict=True):
        ran_on = graph.level() if learning_rule.levelled and rule_kwargs.get("level", True) else graph
        start = time.perf_counter()
        grads = learning_rule(graph, inputs, target, loss, **rule_kwargs)
        seconds = time.perf_counter() - start
        per_param = {}
        for n, ref in reference.items():
            got = grads[n]
            max_abs = float((got - ref).abs().max()) if ref.numel() else 0.0
            per_param[n] = ParamDiff(max_abs=max_abs if max_abs == max_abs else float("inf"),
                                     rel=relative_difference(got, ref, floor))
        max_rel = max((d.rel for d in per_param.values()), default=0.0)
        reports.append(CheckReport(
            rule=rule, loss=losses, dtype=dtype, max_abs_diff=max((d.max_abs for d in per_param.values()), default=0.0),
            max_rel_diff=max_rel, per_param=per_param, passed=bool(max_rel <= limit), tolerance=limit,
            n_vertices=len(ran_on.latent), identity_vertices=ran_on.n_identity, seconds=seconds,
            computed_in=coarsest, grads=grads, reference=reference, graph=graph))
    return reports
