"""IL's inference steps after the error wave has settled, as one compiled function (`il(compile=True)`).

From the feed-forward start the error wave spreads one vertex per step, and `Relaxation` skips what has
not moved. Once the sets of moved, stale and feed-forward vertices at a step's start repeat (its
`Signature`), every later step runs the same ops on new values: that step is recorded as a function of
tensors (`make_fx`) and compiled by inductor, which fuses each vertex's prediction, error, VJP and
displacement update into one loop and writes the new displacements into the state's own buffers.

The errors and feedback are `Relaxation`'s own functions (`vertex_error`, `feedback_from`), run out of
place; the compiled loops may associate sums differently, so the tests hold the result to the literal
loop at the dtype's tolerance. How it is compiled and kept per layout: `pcsim.algorithms.compiled`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from pcsim.algorithms.compiled import Parts, compile_function, flatten, layout_key, unflatten
from pcsim.algorithms.relaxation import Relaxation, feedback_from, value_drive, vertex_error


@dataclass(frozen=True)
class Signature:
    """What decides the ops of one step: `Relaxation`'s bookkeeping sets at its start."""

    moved: frozenset[str]
    stale: frozenset[str]
    at_feedforward: frozenset[str]
    cached_outputs: frozenset[str]

    @staticmethod
    def of(relax: Relaxation) -> Signature:
        return Signature(frozenset(relax.disp), frozenset(relax.stale), frozenset(relax.at_feedforward),
                         frozenset(relax._output_eps))


def run(relax: Relaxation, steps: int, progress=None) -> None:
    """`relax.run(steps)`: eager until the signature repeats, then the compiled step for the rest."""
    it = iter(range(steps) if progress is None else progress(range(steps)))
    previous = None
    for done in it:
        sig = Signature.of(relax)
        if sig == previous:
            _steady(relax, sig, steps - done, it)
            return
        relax.run(1)
        previous = sig


def _steady(relax: Relaxation, sig: Signature, remaining: int, it) -> None:
    step = SteadyStep(relax, sig)
    if not step.moved:  # nothing moves any more: the remaining steps change nothing
        return
    tensors = step.tensors
    compiled = relax.problem.graph.derived(step.key(tensors), lambda _: compile_function(
        step, tensors, "IL's steady inference step", mutated=len(step.moved)))
    n_disp = len(step.moved)
    for k in range(remaining):
        if k:
            next(it, None)  # keep the progress bar moving
        if compiled is None:
            relax.run(1)
        else:
            compiled(*tensors)  # writes the new displacements into `tensors[:n_disp]`
    if compiled is not None:
        step.adopt(tensors[:n_disp])


class SteadyStep:
    """One steady step of `relax` as a function of tensors alone (`__call__`), with its arguments."""

    def __init__(self, relax: Relaxation, sig: Signature):
        self.relax, self.sig = relax, sig
        self.moved = tuple(n for n in relax.hidden if n in sig.moved)
        r, p = relax, relax.problem
        fresh = [n for n in r.latent if n not in sig.stale]
        # with the values fixed for the rest of the run: linearisations and output errors that never go stale
        self.parts = {"disp": {n: r.disp[n] for n in self.moved}, "base": {n: r.base[n] for n in r.latent},
                      "clamped": p.clamped, "param": p.params, "const": p.graph.constants, "target": p.targets,
                      "mu": {n: r.ops[n].mu for n in fresh if r.ops[n].mu is not None},
                      "out_eps": {n: r._output_eps[n] for n in sig.cached_outputs if n not in sig.stale},
                      "point": {f"{n}/{i}": x for n in fresh if not r.ops[n].closed
                                for i, x in enumerate(r.ops[n].parents)}}
        self.names, self.tensors = flatten(self.parts)

    def key(self, tensors: tuple[torch.Tensor, ...]) -> tuple:
        r = self.relax
        losses = tuple(r.problem.losses.items())  # the output errors' formulas are traced into the step
        return ("il-steady", self.sig, r.gamma, r.precision, r.fixed, losses, self.names, layout_key(tensors))

    def adopt(self, disp: tuple[torch.Tensor, ...]) -> None:
        """Hand the final displacements back to `relax`, with its values where a child reads them."""
        r = self.relax
        for n, d in zip(self.moved, disp, strict=True):
            r.disp[n] = d
            if n in r.needs_x:
                r._update_x(n)
            else:
                r._x_behind.add(n)
        r._output_eps = {n: e for n, e in r._output_eps.items() if n not in self.sig.stale}

    # -- the step itself ----------------------------------------------------------------------
    def __call__(self, *tensors: torch.Tensor) -> tuple[()]:
        """One step from the state in `tensors`; the new displacements overwrite the first ones."""
        disp, eps, fb = self.local(unflatten(self.names, tensors, self.parts))
        new = [self._advance(disp[n], eps.get(n), fb.get(n)) for n in self.moved]
        for n, d in zip(self.moved, new, strict=True):  # into the state's own buffers: no fresh memory per step
            disp[n].copy_(d)
        return ()

    def local(self, t: Parts) -> tuple[dict, dict, dict]:
        """At the state in `t` (this step's parts, of other tensors): the displacements, the errors (absent:
        zero) and each vertex's feedback (`feedback_from`'s: a dense sum and products `cot @ W`)."""
        r, sig = self.relax, self.sig
        params, constants, disp, base = t["param"], t["const"], t["disp"], t["base"]
        values: dict[str, torch.Tensor] = {}

        def value(p: str) -> torch.Tensor:
            if p not in values:
                if p in r.base:
                    values[p] = base[p] + disp[p] if p in disp else base[p]
                else:
                    values[p] = t["clamped"][p]
            return values[p]

        mu, pull = {}, {}
        for n in r.latent:  # relinearise what went stale, in topological order
            if n in sig.stale and n not in r.incremental:
                mu[n], pull[n] = r.ops[n].traced([value(p) for p in r.parents[n]], params, constants)
            elif n in t["mu"]:
                mu[n] = t["mu"][n]
                if not r.ops[n].closed and any(r.ops[n].wanted):  # feedback to a latent parent
                    point = [t["point"][f"{n}/{i}"] for i in range(len(r.parents[n]))]
                    pull[n] = r.ops[n].traced(point, params, constants)[1]
        cached = dict(t["out_eps"])
        at_ff = set(sig.at_feedforward) - {n for n in sig.stale if n not in r.incremental}
        eps = {}
        for n in r.latent:
            target = t["target"][n] if n in r.outputs else None
            e, mu[n] = vertex_error(r, n, disp, base[n], mu.get(n), params, cached, sig.stale, at_ff, target)
            if e is not None:
                eps[n] = e
        fb = feedback_from(r, eps, params, lambda n, e: r.ops[n].traced_vjp(e, mu.get(n), pull.get(n), params))
        return disp, eps, fb

    def _advance(self, d, e, fb) -> torch.Tensor:
        """`Relaxation.advance` for one vertex, out of place: d + gamma (feedback - error), the drive the
        fused adaptive step reads too (products formed: inductor's addmm fusion is off, `compiled`)."""
        drive = value_drive(e, fb)
        return d if drive is None else d + self.relax.gamma * drive
