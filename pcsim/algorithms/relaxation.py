"""The one PC step: IL's synchronous inference loop, computing only what changes (run by
`pcsim.il`, `pcsim.ipc` and `pcsim.analysis.energy_trace`).

Its dynamics are the literal loop's (tests/algorithms/sweep_reference.py), step for step, to float64
rounding. What it does not recompute, and why that is exact:

- a vertex whose latent parents have not moved since its last linearisation keeps its prediction and
  linearisation: from the feed-forward start, every vertex until the error wave reaches its parents,
  and the first layer (whose parent is the clamped input) at every step;
- a hidden vertex whose prediction is still its feed-forward value has error `disp` exactly (zero
  until it moves); a zero error sends no feedback, a zero drive moves nothing;
- feedback goes only to latent parents, and Hebbian terms are taken from the final state alone;
- with `fixed_prediction` every linearisation stays at the feed-forward state.

Hot ops use explicit VJP kernels (`pcsim.ops.il_ops`), every other op autograd on its one call; a
linear child's feedback `eps W` is never formed (`feedback_from`).
"""

from __future__ import annotations

from collections.abc import Container, Iterable, Iterator

import torch

from pcsim.algorithms.problem import Problem
from pcsim.errors import DivergenceError
from pcsim.numerics import nan_or_inf, nonfinite
from pcsim.ops.il_ops import Linear, Op, local_op
from pcsim.ops.products import Packed, packs


class Feedback:
    """One vertex's feedback: a dense sum of its children's VJPs plus products `cot @ W` not yet formed."""

    __slots__ = ("dense", "products")

    def __init__(self) -> None:
        self.dense: torch.Tensor | None = None
        self.products: list[tuple[torch.Tensor, torch.Tensor]] = []

    def add(self, term: torch.Tensor) -> None:
        self.dense = term if self.dense is None else self.dense + term


class Relaxation:
    """The state of IL's inference from the feed-forward start, advanced in place by `step()`.

    Per hidden vertex: `base` (feed-forward value), `disp` (displacement, absent while zero) and
    `x = base + disp`, the last two in buffers updated in place once the vertex has moved.

    A linear vertex L with a latent parent P is handled by increments: its prediction moved by
    `W disp_P` from its feed-forward value, so `eps_L = disp_L - disp_P W^T` is one GEMM with
    accumulation, with no cancellation of two large values, and P's value `x_P` is not needed
    (it is materialised only for the vertex's other children and for the Hebbian terms).
    """

    def __init__(self, problem: Problem, gamma: float, precision: float = 1.0, fixed_prediction: bool = False,
                 base: dict[str, torch.Tensor] | None = None):
        if not gamma > 0:  # a rate <= 0 (or NaN) climbs the energy or stands still: never IL's inference
            raise ValueError(f"gamma (the inference rate) must be > 0, got {gamma}")
        g = problem.graph
        self.problem = problem
        self.gamma = gamma
        self.precision = precision
        self.fixed = fixed_prediction
        self.latent = g.latent
        latent = set(self.latent)
        self.outputs = set(g.outputs)
        self.hidden = [n for n in self.latent if n not in self.outputs]
        self.parents = {n: g[n].parents for n in self.latent}
        self.children = {n: tuple(dict.fromkeys(c for c in g.children[n] if c in latent)) for n in self.latent}
        self.ops: dict[str, Op] = {n: local_op(g[n], problem.params, g.constants, [p in latent for p in g[n].parents],
                                               [g[p].shape for p in g[n].parents]) for n in self.latent}
        self.weights = {op.weight_name: op.weight for op in self.ops.values() if isinstance(op, Linear)}
        # id(W) -> W packed for oneDNN, where torch's GEMM is the slow one (`pcsim.ops.products`)
        self.packed = {id(op.weight): Packed(op.weight, g[n].shape[0]) for n, op in self.ops.items()
                       if isinstance(op, Linear) and len(g[n].shape) == 2 and packs(op.weight)}
        self.base = problem.feedforward(self._packed_forward) if base is None else base
        self.x = dict(self.base)  # current values; outputs stay at their feed-forward value (free)
        self.disp: dict[str, torch.Tensor] = {}
        for n, op in self.ops.items():
            op.at(problem.parent_values(n, self.x), mu=self.base[n])  # the forward pass already computed mu
        self.incremental = {n for n, op in self.ops.items()
                            if not self.fixed and isinstance(op, Linear) and op.wanted[0]
                            and self.base[n].dim() == 2 and self.base[self.parents[n][0]].dim() == 2}
        self.needs_x = {n for n in self.hidden if any(c not in self.incremental for c in self.children[n])}
        # feed-forward values with an infinite entry (a -inf attention mask): there base - mu is inf - inf
        self.unbounded = set(nonfinite({n: self.base[n] for n in self.hidden}))
        self.at_feedforward = set(self.latent)  # mu is still base[n], so eps is exactly disp
        self.stale: set[str] = set()  # latent parents moved since the last linearisation
        self._x_behind: set[str] = set()  # moved, but x not yet recomputed (no child needed it)
        self._buf: dict[tuple[str, str], torch.Tensor] = {}
        self._output_eps: dict[str, torch.Tensor] = {}

    def _packed_forward(self, name: str, parents: list[torch.Tensor]) -> torch.Tensor | None:
        """A linear vertex's feed-forward value on its packed weight (the weight is packed for the steps
        anyway); None for the others, which the forward pass computes as always."""
        op = self.ops[name]
        p = self.packed.get(id(op.weight)) if isinstance(op, Linear) and parents[0].dim() == 2 else None
        return None if p is None else p.times_t(parents[0], op.bias)

    def _buffer(self, name: str, kind: str) -> torch.Tensor:
        buf = self._buf.get((name, kind))
        if buf is None:
            buf = self._buf[name, kind] = torch.empty_like(self.base[name], memory_format=torch.contiguous_format)
        return buf

    def errors(self, only: Container[str] | None = None) -> dict[str, torch.Tensor]:
        """Every latent vertex's error at the current state (or those in `only`); absent means exactly zero.

        The tensors are this object's buffers: valid until the next `advance`, not to be written.
        `only` serves the final state, whose update reads the errors of vertices with parameters
        alone: the others' predictions (a tanh each, in an MLP) are not recomputed.
        """
        names = self.latent if only is None else [n for n in self.latent if n in only]
        for n in names:  # topological order, so a child reads its parents' new values
            if n in self.stale and n not in self.incremental:
                self.ops[n].at(self.problem.parent_values(n, self.x))
                self.at_feedforward.discard(n)
                self._output_eps.pop(n, None)
        eps = {}
        for n in names:
            op = self.ops[n]
            e, op.mu = vertex_error(self, n, self.disp, self.base[n], op.mu, self.weights, self._output_eps,
                                    self.stale, self.at_feedforward, buffer=self._buffer)
            if e is not None:
                eps[n] = e
        self.stale.difference_update(names)
        return eps

    def feedback(self, eps: dict[str, torch.Tensor]) -> dict[str, Feedback]:
        """`feedback_from` through each op's own linearisation (a linear child's term accumulates in `advance`)."""
        return feedback_from(self, eps, self.weights, lambda n, e: self.ops[n].vjp(e))

    def advance(self, eps: dict[str, torch.Tensor], fb: dict[str, Feedback], held: Container[str] = ()) -> None:
        """disp_i <- disp_i + gamma (feedback_i - eps_i), for every hidden vertex; x_i where a child reads it.

        Parents come before children, so a child's error is read (as a product's factor) before
        the child's own displacement, which it may alias, moves. Vertices in `held` keep their values.
        """
        gamma = self.gamma
        moved = []
        for n in self.hidden:
            if n in held:
                continue
            e, f = eps.get(n), fb.get(n)
            if e is None and f is None:
                continue  # zero drive: the population keeps its value (and its feed-forward tensor)
            dense, products = (None, ()) if f is None else (f.dense, f.products)
            d = self.disp.get(n)
            if d is None:  # first move: fresh storage, never the feed-forward tensor
                if dense is not None:
                    d = torch.sub(dense, e).mul_(gamma) if e is not None else dense * gamma
                elif e is not None:
                    d = e * -gamma
            elif e is d and dense is not None:  # at the feed-forward prediction: d + gamma (dense - d)
                d.lerp_(dense, gamma)
            elif e is d:
                d.mul_(1 - gamma)
            else:  # d + gamma dense - gamma e: no buffer for the drive
                if dense is not None:
                    d.add_(dense, alpha=gamma)
                if e is not None:
                    d.sub_(e, alpha=gamma)
            for cot, w in products:
                p = self.packed.get(id(w))
                if d is None:
                    d = (torch.mm(cot, w) if p is None else p.times(cot)).mul_(gamma)
                elif p is None:
                    d.addmm_(cot, w, alpha=gamma)
                else:
                    d.add_(p.times(cot), alpha=gamma)
            self.disp[n] = d
            moved.append(n)
        for n in moved:
            if n in self.needs_x:
                self._update_x(n)
            else:
                self._x_behind.add(n)
            if not self.fixed:
                self.stale.update(self.children[n])

    def _update_x(self, n: str) -> None:
        if self.x[n] is self.base[n]:
            self.x[n] = self.base[n] + self.disp[n]  # fresh storage: never write into base
        else:
            torch.add(self.base[n], self.disp[n], out=self.x[n])
        self._x_behind.discard(n)

    def load(self, disp: dict[str, torch.Tensor]) -> None:
        """Put the state at x = base + disp (any displacement: an ODE solver's stage, say). Outputs' values
        move too (their children read them) but their errors stay `output_error`'s. Every vertex with a
        latent parent relinearises at the next `errors()`: nothing is known to be unmoved."""
        self.disp = {n: disp[n] for n in self.hidden if n in disp}
        self.x = {n: self.base[n] + disp[n] if n in disp else b for n, b in self.base.items()}
        self._x_behind.clear()
        self._output_eps.clear()
        latent = set(self.latent)
        self.stale = {n for n in self.latent if any(p in latent for p in self.parents[n])}
        self.at_feedforward = {n for n in self.latent if not any(p in disp for p in self.parents[n])}

    def parameters_moved(self) -> None:
        """The problem's parameters were changed in place (iPC): every vertex relinearises at the next
        `errors()`, the first layer included, and no linear error is an increment on its feed-forward
        prediction any more (that prediction was made with the old weights)."""
        self.incremental = set()
        self.packed = {}  # copies of the old weights
        self.needs_x = {n for n in self.hidden if self.children[n]}
        for n in list(self._x_behind):  # children that read increments now read values
            self._update_x(n)
        self.stale = set(self.latent)

    def run(self, steps: int, progress=None) -> None:
        for _ in range(steps) if progress is None else progress(range(steps)):
            eps = self.errors()
            self.advance(eps, self.feedback(eps))

    def errors_along(self, steps: int) -> Iterator[dict[str, torch.Tensor]]:
        """The errors at steps 0..steps, advancing between them (a replay of `run`, to look at every step)."""
        for t in range(steps + 1):
            eps = self.errors()
            yield eps
            if t < steps:
                self.advance(eps, self.feedback(eps))

    def hebbian(self, eps: dict[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
        """(d mu / d theta)^T eps per vertex with a non-zero error and parameters, at the current state."""
        for n in list(self._x_behind):
            self._update_x(n)
        out = {}
        for n in self.latent:
            if n in eps and self.problem.graph[n].params:
                op = self.ops[n]
                if n in self.incremental:  # its input moved without a relinearisation: move the point
                    op.at(self.problem.parent_values(n, self.x), mu=op.mu)
                out[n] = op.hebbian(eps[n])
        return out

    def value(self, name: str) -> torch.Tensor:
        """x of a latent vertex at the current state (this object's storage: copy it to keep it)."""
        if name in self._x_behind:
            self._update_x(name)
        return self.x[name]

    def prediction(self, name: str) -> torch.Tensor:
        """mu of a latent vertex at its last linearisation (current after `errors()`)."""
        return self.ops[name].mu

    def displacement(self, name: str) -> torch.Tensor:
        """x - x_ff of a latent vertex (a fresh zero tensor while it has not moved)."""
        d = self.disp.get(name)
        return torch.zeros_like(self.base[name]) if d is None else d


def _shifted(base: torch.Tensor, dp: torch.Tensor, weight: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """`base + dp W^T` into `out`. For a narrow output (a classifier's logits) as `(W dp^T)^T`, which MKL
    forms faster than the product itself (benchmarks/results/design_measurements.md)."""
    if weight.shape[0] <= 16:
        return torch.add(base, torch.mm(weight, dp.t()).t(), out=out)
    return torch.addmm(base, dp, weight.t(), out=out)


def vertex_error(r: Relaxation, n: str, disp, base, mu, weights, cached, stale, at_ff, target=None,
                 buffer=lambda n, kind: None) -> tuple[torch.Tensor | None, torch.Tensor]:
    """(error of `r`'s latent vertex `n`, None where exactly zero; its prediction) at the displacements
    `disp`, its feed-forward value `base` and its last prediction `mu`. The one case analysis of the
    eager loop and the compiled step (`il_compiled`): `cached` holds the output errors still current
    (a fresh one is added), `at_ff` the vertices at their feed-forward prediction. `buffer(n, kind)`:
    storage to write into (the eager loop's), else None (a traced step, out of place)."""
    dp = disp.get(r.parents[n][0]) if n in r.incremental else None
    if dp is not None:  # mu moved by `dp W^T` from base: an increment, not x_parent's product
        at_ff.discard(n)
        w = weights[r.ops[n].weight_name]
        if n in r.outputs:
            if n in stale or n not in cached:
                mu = _shifted(base, dp, w, buffer(n, "mu"))
                cached[n] = r.problem.output_error(n, mu, r.precision, target)
            return cached[n], mu
        out = buffer(n, "eps")
        if out is None:  # traced: a product and a difference, which inductor fuses into the next loop
            return (disp[n] - dp @ w.t() if n in disp else -(dp @ w.t())), mu
        p = r.packed.get(id(w))
        if p is not None:
            return (torch.sub(disp[n], p.times_t(dp), out=out) if n in disp else torch.neg(p.times_t(dp), out=out)), mu
        if n in disp:
            return torch.addmm(disp[n], dp, w.t(), alpha=-1, out=out), mu
        return torch.mm(dp, w.t(), out=out).neg_(), mu
    if n in r.outputs:
        if n not in cached:
            cached[n] = r.problem.output_error(n, mu, r.precision, target)
        return cached[n], mu
    if n in at_ff:  # (base - base) + disp
        return disp.get(n), mu
    e = torch.sub(base, mu, out=buffer(n, "eps"))  # (base - mu) + disp, not x - mu: no cancellation
    if n in r.unbounded:  # where the prediction still is its infinite feed-forward value, the gap is 0, not NaN
        e = e.masked_fill_(base == mu, 0.0)
    return (e if n not in disp else e.add_(disp[n])), mu


def feedback_from(r: Relaxation, eps, weights, vjp) -> dict[str, Feedback]:
    """sum over children c of J_c^T eps_c per latent vertex of `r` (absent: exactly zero). A linear
    child's `eps_c W` is left as a product (`Feedback.products`), W from `weights`; any other child's
    terms are `vjp(c, eps_c)` (the op's own linearisation, or a traced step's pure pullback)."""
    fb: dict[str, Feedback] = {}
    for n, e in eps.items():
        op = r.ops[n]
        if isinstance(op, Linear) and op.wanted[0] and e.dim() == 2:
            fb.setdefault(r.parents[n][0], Feedback()).products.append((e, weights[op.weight_name]))
            continue
        for p, c in zip(r.parents[n], vjp(n, e), strict=True):
            if c is not None:
                fb.setdefault(p, Feedback()).add(c)
    return fb


def value_drive(e, fb: Feedback | None, out: torch.Tensor | None = None) -> torch.Tensor | None:
    """A value population's drive, feedback - error (None: exactly zero): `fb`'s dense part plus its
    products `cot @ W`, minus `e`. Written into `out` where given (the field's derivative: the products
    accumulate in place), else out of place for a traced step, where products stay products so that
    inductor fuses the sums into its loops (an addmm would first copy its addend). Continuous time's
    derivative, and IL's step over gamma."""
    dense, rest = (None, []) if fb is None else (fb.dense, list(fb.products))
    if out is None:
        d = dense
        for cot, w in rest:
            d = cot @ w if d is None else d + cot @ w
        return d if e is None else -e if d is None else d - e
    if dense is not None:
        d = torch.sub(dense, e, out=out) if e is not None else out.copy_(dense)
    elif rest:
        cot, w = rest.pop(0)
        d = torch.addmm(e, cot, w, beta=-1, out=out) if e is not None else torch.mm(cot, w, out=out)
    elif e is not None:
        d = torch.neg(e, out=out)
    else:
        return None
    for cot, w in rest:
        d.addmm_(cot, w)
    return d


def check_finite(updates: dict[str, torch.Tensor], rule: str, problem: Problem, gamma: float,
                 replay: Iterable[dict[str, torch.Tensor]], blame=None) -> dict[str, torch.Tensor]:
    """`updates`, if every one is finite. Else the run is replayed (`replay`: its errors step by step, from a
    fresh start) to name the vertices whose error left finite values first, in a DivergenceError. `blame`
    (`descent.Blame`) may name another setting at fault than gamma."""
    bad = nonfinite(updates)
    if not bad:
        return updates
    for t, eps in enumerate(replay):
        first = nonfinite(eps)
        if first:
            where = "; ".join(f"{named(problem.graph[n])} became {nan_or_inf(eps[n])}" for n in first[:3])
            at, cure = (blame() if blame else None) or (
                f"gamma = {gamma}", "Each step moves a value by gamma times its drive: a smaller gamma keeps steep "
                "ops (the rsqrt of a small variance, say) from overshooting")
            raise DivergenceError(f"{rule} diverged at {at}: at step {t} the error of {where}"
                                  f"{f' (and {len(first) - 3} more)' if len(first) > 3 else ''}, the first to leave "
                                  f"finite values. {cure}")
    at_fault = blame() if blame else None  # iPC's weights, say, overflowed at the last step
    if at_fault:
        raise DivergenceError(f"{rule} diverged at {at_fault[0]}: its update of {bad[0]!r} is not finite while every "
                              f"error stayed finite. {at_fault[1]}")
    raise DivergenceError(f"{rule}'s update of {bad[0]!r} is not finite while every error stayed finite: the "
                          "Hebbian term overflowed")


def named(vertex) -> str:
    """The vertex, with the user's source line where the capture knows it."""
    if not vertex.source:
        return vertex.describe()
    return f"vertex '{vertex.name}' ({vertex.source}, shape {tuple(vertex.shape)})"
