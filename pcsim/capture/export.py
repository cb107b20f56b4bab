"""The module as a core ATen program: `torch.export` (non-strict), then torch's decompositions.

Non-strict export runs the module's own Python on fake tensors of the example shapes, so shape-,
dtype- and `ndim`-dependent code (Hugging Face masks, einops, asserts on a sequence length) is
simply run, hooks and parametrizations included. What export cannot follow (control flow on tensor
*values*) fails here, and the failure is reported at the user's line.

Decomposition is torch's core ATen table, less the ops pcsim keeps whole (`ops.table.KEPT_WHOLE`:
one vertex per call whose backward is one kernel, as in backprop) and the fused recurrent layers,
plus pcsim's own for recurrent layers (`recurrent.py`) and attention (`attention.py`).
"""

from __future__ import annotations

import contextlib
import functools
import io
import logging
import re
import sys
import threading
import warnings
from collections.abc import Iterable, Iterator

import torch
import torch._export.utils
from torch import nn
from torch.nn.utils.rnn import PackedSequence

from pcsim.capture.attention import DECOMPOSITIONS as ATTENTION
from pcsim.capture.functions import changed_attributes, refuse_custom_backwards, seen_functions
from pcsim.capture.names import where
from pcsim.capture.patching import patched
from pcsim.capture.recurrent import UNROLLED
from pcsim.capture.stop_gradient import inference_mode_as_grad_mode, mark_stop_gradients
from pcsim.errors import InputError, TraceError, UnsupportedOpError, first_line
from pcsim.graph.provenance import exception_user_line, user_stacklevel
from pcsim.ops.table import FUSED_OPS, KEPT_WHOLE

# Messages torch gives for control flow on tensor values, and what the user can do about it.
_DATA_DEPENDENT = ("data-dependent", "could not extract specialized integer", "Could not extract",
                   "Dynamic control flow")
# torch.export's message where forward() reads `.data`: the value is a fake tensor it cannot trace through
_LIFTED_FAKE = "fake tensor in the exported program constant"
# torch's message for an output object it cannot flatten (a Hugging Face DynamicCache returned with use_cache=True)
_UNKNOWN_OUTPUT = re.compile(r"Found <class '([\w.]+)'> in output, which is not a known type")


@functools.lru_cache(maxsize=8)
def decomposition_table(fused: frozenset[type[nn.Module]]) -> dict:
    """torch's core ATen decompositions without the ops kept whole (and the fused layers' kernels), built once
    per `fused` set (building it takes longer than capturing a small model): callers use a copy."""
    table = torch.export.default_decompositions()
    kept = {*KEPT_WHOLE, *(op for t in fused for op in FUSED_OPS[t])}
    table.update({op: fn for op, fn in UNROLLED.items() if op not in kept})
    for op in kept:
        table.pop(op, None)
    table.update(ATTENTION)
    return table


# torch.export patches process-wide state while it runs (its dispatch-mode stack, torch functions, logging, and
# stderr and warnings here): two captures at once in two threads broke each other with torch's assertions ('Trying
# to pop empty mode stack'), blamed on the models. One capture at a time; the rules themselves run concurrently.
_CAPTURING = threading.Lock()


def export_program(module: nn.Module, inputs: tuple[torch.Tensor, ...], fused: frozenset[type[nn.Module]]
                   ) -> tuple[torch.export.ExportedProgram, frozenset[tuple[int, str]]]:
    """`module` on `inputs` as a core ATen `ExportedProgram`, and the (module id, attribute) of the Python numbers
    and flags forward() changed (a step counter; warned about); a `TraceError` naming the user's line otherwise."""
    name = type(module).__name__
    registered: list[str] = []  # buffers forward() registered on the module itself
    try:
        with _CAPTURING, warnings.catch_warnings(), _torch_logs_quiet():
            # RNN layers and the legacy weight_norm hook assign tensor attributes while exported: torch's
            # note to itself, about code the user did not write
            warnings.filterwarnings("ignore", message="The tensor attributes? .* assigned during export")
            warnings.filterwarnings("ignore", category=FutureWarning)
            functions: list[type] = []  # the custom autograd.Functions forward() applies
            changed: dict = {}  # Python attributes forward() changes (a step counter)
            with (seen_functions(functions), inference_mode_as_grad_mode(), changed_attributes(changed),
                  _registered_tensors_kept(module, registered)):
                program = torch.export.export(module, tuple(inputs), strict=False)
            if functions:
                refuse_custom_backwards(module, tuple(inputs))
            mark_stop_gradients(program)
            with _dispatcher_read_once():
                program = program.run_decompositions(decomposition_table(fused).copy())
    except Exception as e:  # noqa: BLE001 - reported at the user's line, without torch's stack
        if registered:  # torch's own bug: it copies such a buffer into another of its inputs, in its index's place
            raise TraceError(f"{name} could not be captured: forward() registers buffer '{registered[0]}' on the "
                             "module itself (self.register_buffer in forward(), where it was None or absent), which "
                             "torch.export writes into another of the program's inputs, and that failed "
                             f"({type(e).__name__}: {first_line(e)}). Register it in __init__, or in a submodule's "
                             "forward()") from None
        raise _export_error(module, inputs, e) from None
    _refuse_higher_order(program)
    if changed:
        paths = {id(m): path for path, m in module.named_modules()}
        (owner, attr), (old, new) = next(iter(changed.items()))
        where = ".".join(p for p in ("self", paths.get(id(owner), "?"), attr) if p)
        more = " (and more)" if len(changed) > 1 else ""
        warnings.warn(f"{name}: forward() changes {where} ({old!r} -> {new!r}){more}, which torch.export restores "
                      "after its one run: the graph computes as that run did, at every rule call, where later calls "
                      f"of the module read {where} changed again (a step counter); if that changes what forward() "
                      "computes, the graph holds for that one call only", stacklevel=user_stacklevel())
    return program, frozenset((id(owner), attr) for owner, attr in changed)


_REGISTRIES = ("_parameters", "_buffers")  # the dicts of a module that hold its registered tensors


@contextlib.contextmanager
def _registered_tensors_kept(module: nn.Module, registered: list[str]) -> Iterator[None]:
    """Put back every submodule's parameters and buffers (which names, which tensors) as they were on entry, and
    list in `registered` the buffers of `module` itself that were registered meanwhile, where there was none.

    torch.export restores a module's plain attributes after its run of forward() on fake tensors, but not its
    registered tensors: a buffer forward() (re-)registers itself (a lazily built cache, as x-transformers' ALiBi
    bias) was left in the user's module as a fake tensor, and its next call stopped inside torch ('Could not guard
    on data-dependent expression'). forward() builds such a tensor again when it runs for real."""
    saved = [(sub, {r: dict(sub.__dict__[r]) for r in _REGISTRIES}, set(sub._non_persistent_buffers_set))
             for sub in module.modules()]
    try:
        yield
    finally:
        before = saved[0][1]["_buffers"]
        registered.extend(k for k, v in module._buffers.items() if v is not None and before.get(k) is None)
        for sub, registries, non_persistent in saved:
            for table, before in [*registries.items(), ("_non_persistent_buffers_set", non_persistent)]:
                sub.__dict__[table].clear()
                sub.__dict__[table].update(before)


# what a higher-order op left in the decomposed program stands for, and what to write instead
_HIGHER_ORDER = {
    "cond": "branches on a tensor's value (torch.cond): a graph of populations is one program, and inference moves "
            "the values the branch is chosen by. Compute both branches and pick with torch.where",
    "while_loop": "loops on a tensor's value (torch.while_loop): unroll it to a fixed number of steps",
    "with_effects": "calls {effect}, an op with a side effect (torch.export threads it through a token), which a "
                    "graph of populations cannot hold",
}


def _refuse_higher_order(program: torch.export.ExportedProgram) -> None:
    """A higher-order op the decompositions leave (torch.cond, while_loop, map, scan, an effectful op) runs
    subgraphs or effects pcsim does not follow: refused at the user's line (it stopped with a KeyError on the
    subgraph's name, or 'takes a TOKEN input')."""
    for n in program.graph.nodes:
        if n.op == "call_function" and isinstance(n.target, torch._ops.HigherOrderOperator):
            name = n.target.name()
            effect = str(n.args[1]) if name == "with_effects" and len(n.args) > 1 else "an op"
            why = _HIGHER_ORDER.get(name, f"runs a subgraph through the higher-order op torch.ops.higher_order."
                                          f"{name}, which pcsim does not follow").format(effect=effect)
            raise UnsupportedOpError(where(n, f"forward() {why}"))


_DISPATCHER_READ = getattr(torch._export.utils, "_materialize_cpp_cia_ops", None)


def _dispatcher_read_once() -> contextlib.AbstractContextManager:
    """torch's `run_decompositions` reads every composite op's registration from the C++ dispatcher once per op
    namespace, twice: the same answer each time within one run, and most of capturing a small model. Within
    one run it is read once (torch.export's own code and result otherwise; nothing registers ops meanwhile)."""
    if _DISPATCHER_READ is None:  # another torch: its own way
        return contextlib.nullcontext()
    cached = functools.cache(_DISPATCHER_READ)  # the first call reads
    return patched(torch._export.utils, "_materialize_cpp_cia_ops", cached, _DISPATCHER_READ)


@contextlib.contextmanager
def _torch_logs_quiet():
    """torch logs and prints the internals of a failed export (fake-tensor stacks, graphs) before raising;
    pcsim reports the failure itself, at the user's line, so that output is dropped while it runs."""
    previous = logging.root.manager.disable  # torch makes some of its loggers while exporting: all are muted
    logging.disable(logging.CRITICAL)
    try:
        with contextlib.redirect_stderr(io.StringIO()):
            yield
    finally:
        logging.disable(previous)


def _packs_sequences(e: Exception) -> bool:
    """Whether a frame the failure passed through held a PackedSequence."""
    tb = e.__traceback__
    while tb is not None:
        if any(isinstance(v, PackedSequence) for v in tb.tb_frame.f_locals.values()):
            return True
        tb = tb.tb_next
    return False


def _export_error(module: nn.Module, inputs: Iterable[torch.Tensor], e: Exception) -> TraceError:
    # a RecursionError stops wherever the stack ran out (copy.py, torch), not at a line of the user's
    line = None if isinstance(e, RecursionError) else exception_user_line(e)
    where = f" at {line.short}" if line else ""
    shapes = ", ".join(str(tuple(x.shape)) for x in inputs)
    text = (f"{type(module).__name__} could not be captured{where}: {type(e).__name__}: {first_line(e)}"
            + (f"\n{line}" if line else ""))
    if _packs_sequences(e):  # torch fails inside the recurrent layer, on a size that is a fake tensor
        text += ("\nforward() runs a recurrent layer on a PackedSequence (pack_padded_sequence, pack_sequence): its "
                 "batch sizes are taken from the lengths' *values*, which torch.export cannot capture as sizes. Run "
                 "the layer on the padded batch instead and mask what the padding computes: outputs at t >= length "
                 "ignored, each sequence's last state read at length - 1 (out[torch.arange(B), lengths - 1]; a "
                 "unidirectional layer gives the packed one's values so).")
    elif _UNKNOWN_OUTPUT.search(str(e)):  # torch's words name the class alone, and point at its own issue tracker
        cls = _UNKNOWN_OUTPUT.search(str(e)).group(1)
        text += (f"\nforward() returns a {cls} among its outputs, which torch.export cannot take apart into "
                 "tensors: return tensors, in tuples, lists, dicts or a Hugging Face ModelOutput."
                 + (" This one is a Hugging Face key/value cache (past_key_values): call the model with "
                    "use_cache=False, or set model.config.use_cache = False before tracing." if "Cache" in cls else ""))
    elif _LIFTED_FAKE in str(e):  # torch's words for a `.data` read, with no line of the user's
        text += ("\nforward() reads a tensor's `.data` (or keeps a tensor it computed as a module attribute), which "
                 "torch.export cannot follow: use `.detach()` for a value without gradient.")
    elif any(k in str(e) for k in _DATA_DEPENDENT):
        # `if t.sum() > 0` and `float(t.mean())` fail alike: torch names only a symbol (u0, zuf0)
        text += ("\nThe forward pass needs the *values* of a tensor in Python: a branch on it (`if t.sum() > 0`), or "
                 "float(), int(), bool() of it. pcsim captures one program for the example inputs' shapes: compute "
                 "that from shapes or Python values, keep it a tensor (torch.where), or move it outside forward().")
    elif isinstance(e, RecursionError):
        # torch.export follows each module call with about eight Python frames of its own: a model that runs fine
        # nested some 120 modules deep (an nn.Sequential wrapped in another, over and over) exceeds the default
        # limit here, and the inputs' shapes are not the matter
        nesting = max((path.count(".") + 1 for path, _ in module.named_modules() if path), default=0)
        text += (f"\ntorch.export follows every nested module call with several Python frames, and this module's "
                 f"calls nest {nesting} deep: raise Python's limit (sys.setrecursionlimit, now "
                 f"{sys.getrecursionlimit()}) or nest the modules less (an nn.Sequential of the layers themselves)")
    elif isinstance(e, RuntimeError | ValueError | IndexError | TypeError | AssertionError):
        text += f"\n(the model was run on example inputs of shape {shapes}: do they fit its forward()?)"
    return TraceError(text) if not isinstance(e, InputError) else e
