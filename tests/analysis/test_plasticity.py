"""The analysis functions answer their questions correctly (oracles: closed forms and autograd)."""

import warnings

import numpy as np
import pytest
import torch

import pcsim
from pcsim.algorithms.il import il_path
from pcsim.analysis import energy_trace, il_convergence, locality_audit, timing_sensitivity
from pcsim.dynamics.divergence import DivergenceWarning
from pcsim.numerics import tolerance
from pcsim.zoo import SMALL_DIMS
from tests.algorithms.sweep_reference import linearise
from tests.equivalence.archs import ARCHS


def _problem(arch="mlp_tanh_bias"):
    module, inputs, target = ARCHS[arch](torch.float64, "mse")
    return pcsim.trace(module, *inputs), inputs, target


def test_every_update_is_local_and_hebbian():
    graph, inputs, target = _problem("residual_block")
    reports = locality_audit(graph, inputs, target)
    assert {r.parameter for r in reports} == set(graph.param_names)
    for r in reports:
        assert r.local and r.depends_on_post, r
        assert r.depends_on_pre == (not r.parameter.endswith("bias")), r  # a bias sees no pre-synaptic input


def test_timing_sensitivity_is_exact_on_the_diagonal_only():
    graph, inputs, target = _problem()
    levels, offsets, matrix = timing_sensitivity(graph, inputs, target, offsets=[-1, 0, 1, 2])
    diagonal = matrix[:, offsets.index(0)]
    assert np.all(diagonal <= tolerance(torch.float64)), diagonal
    off = np.delete(matrix, offsets.index(0), axis=1)
    off = off[~np.isnan(off)]
    assert off.size and np.all(off > 1e-6), off


def test_il_convergence_rows_match_direct_calls():
    graph, inputs, target = _problem()
    rows = il_convergence(graph, inputs, target, steps=(5, 200), fixed_prediction=(True,))
    assert [r["steps"] for r in rows] == [5, 200]
    assert rows[1]["relative_error"] < rows[0]["relative_error"] and rows[1]["angle_deg"] < rows[0]["angle_deg"]
    module = ARCHS["mlp_tanh_bias"](torch.float64, "mse")[0]
    reference = pcsim.check(module, inputs, target, rule="bp").reference  # autograd on the module
    got = pcsim.il(graph, inputs, target, steps=200, fixed_prediction=True)
    a = torch.cat([got[n].reshape(-1) for n in reference])
    b = torch.cat([reference[n].reshape(-1) for n in reference])
    assert abs(float((a - b).norm() / b.norm()) - rows[1]["relative_error"]) < 1e-12


def test_il_convergence_refuses_settings_that_give_no_rows_or_wrong_ones():
    """`gammas=()` returned [] without a word, `steps=5` stopped in itertools ('int' object is not iterable), and
    `fixed_prediction=("no",)` ran the fixed-prediction variant and labelled its row 'no'. A generator is taken."""
    graph, inputs, target = _problem()
    with pytest.raises(ValueError, match="gammas is empty"):
        il_convergence(graph, inputs, target, gammas=())
    with pytest.raises(ValueError, match="steps must be a sequence of settings"):
        il_convergence(graph, inputs, target, steps=5)
    with pytest.raises(ValueError, match="fixed_prediction must be True or False, got 'no'"):
        il_convergence(graph, inputs, target, fixed_prediction=("no",))
    rows = il_convergence(graph, inputs, target, gammas=(g for g in (0.1, 0.2)), steps=(3,), fixed_prediction=(True,))
    assert [r["gamma"] for r in rows] == [0.1, 0.2]


def test_energy_trace_sums_to_the_free_energy_and_falls():
    graph, inputs, target = _problem()
    trace = energy_trace(graph, inputs, target, gamma=0.05, steps=20)
    total = np.sum(list(trace.values()), axis=0)
    (out,) = graph.outputs
    assert trace[out][0] == total[0]  # at the feed-forward state only the output carries energy
    assert np.all(np.diff(total) <= 1e-12) and total[-1] < total[0]


def _zoo_problem(name):
    from pcsim.zoo import load_model_file

    spec = load_model_file(name)
    module, inputs, target = spec.build_model(seed=0, **SMALL_DIMS[name])
    module = module.double()
    inputs = tuple(x.double() if x.is_floating_point() else x for x in inputs)
    return pcsim.trace(module, *inputs), inputs, target, spec.loss


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(SMALL_DIMS))
def test_every_rule_is_local_on_the_zoo(name):
    graph, inputs, target, loss = _zoo_problem(name)
    for rule in ("zil", "fa-zil", "il"):
        reports = locality_audit(graph, inputs, target, loss, rule=rule)
        assert reports, (name, rule)
        bad = [r for r in reports if not (r.local and (r.depends_on_post or r.silent))]
        # a silent term is a parameter that reaches the vertex through a zero (W_hh on the zero initial state)
        assert all(r.parameter.startswith(("gru.weight_hh", "lstm.weight_hh", "rnn.weight_hh"))
                   for r in reports if r.silent), (name, rule)
        assert not bad, (name, rule, bad[:3])


def test_a_rule_that_reads_another_layers_error_is_caught():
    """The mutant adds a trace of the next vertex's error to each update: the audit must flag it, and only it."""
    graph, inputs, target = _problem("mlp_tanh_bias")
    latent = list(graph.level().latent)

    def reads_a_neighbour(problem, values, errors, vertex):
        honest = linearise(problem, vertex, values).pullback(errors[vertex])[1]
        other = latent[(latent.index(vertex) + 1) % len(latent)]
        return {p: h + 1e-3 * errors[other].sum() for p, h in honest.items()}

    caught = locality_audit(graph, inputs, target, rule=reads_a_neighbour)
    assert caught and not any(r.local for r in caught)
    control = locality_audit(graph, inputs, target, rule="zil")
    assert {r.parameter for r in control} == {r.parameter for r in caught} and all(r.local for r in control)


@pytest.mark.parametrize("loss", ["mse", "ce"])
def test_weight_transport_and_a_broadcast_output_error_are_caught(loss):
    """Two classic non-local rules that read nothing of another population but what `problem` holds: one
    scales each update by another layer's weight (weight transport), one adds the output error computed
    from the target (direct feedback alignment). Before: both passed as local."""
    module, inputs, target = ARCHS["mlp_tanh_bias"](torch.float64, loss)
    graph = pcsim.trace(module, *inputs)
    (out,) = graph.outputs

    def honest(problem, values, errors, vertex):
        return linearise(problem, vertex, values).pullback(errors[vertex])[1]

    def weight_transport(problem, values, errors, vertex):
        other = next(n for n in problem.params if n not in problem.graph[vertex].params)
        return {p: h * problem.params[other].sum() for p, h in honest(problem, values, errors, vertex).items()}

    def broadcast(problem, values, errors, vertex):
        y = problem.target(out).double()
        signal = (y * torch.arange(1.0, y.numel() + 1, dtype=y.dtype).reshape(y.shape)).sum()  # sample by sample
        return {p: h + 1e-3 * signal for p, h in honest(problem, values, errors, vertex).items()}

    assert all(r.local for r in locality_audit(graph, inputs, target, loss, rule=honest))
    for rule in (weight_transport, broadcast):
        caught = locality_audit(graph, inputs, target, loss, rule=rule)
        assert caught and not any(r.local for r in caught), rule.__name__


def test_unknown_rule_is_a_clear_error():
    graph, inputs, target = _problem()
    with pytest.raises(ValueError, match="rule must be one of"):
        locality_audit(graph, inputs, target, rule="hebb")


@pytest.mark.parametrize(("rule", "where"), [("zil", "pcsim.ops.local.Autograd._results"),
                                             ("fa-zil", "pcsim.ops.local.Autograd._results"),
                                             ("il", "pcsim.ops.il_ops.Linear.hebbian")])
def test_the_audit_runs_the_code_each_rule_runs(monkeypatch, rule, where):
    """A non-local term planted in the code a rule runs (each Hebbian term nudged by the previous one
    computed: state outside the vertex) is caught by that rule's audit; the rule itself moves with it."""
    graph, inputs, target = _problem("mlp_tanh_bias")
    honest = RULE_CALLS[rule](graph, inputs, target)
    assert all(r.local for r in locality_audit(graph, inputs, target, rule=rule))
    module, name = where.rsplit(".", 1)
    owner = _attribute(module)
    original = getattr(owner, name)
    last = []

    def planted(self, *args, **kwargs):
        out = original(self, *args, **kwargs)
        terms = out[1] if isinstance(out, tuple) else out
        nudge = 1e-3 * last[-1] if last else 0.0
        if terms:
            last.append(float(sum(t.sum() for t in terms.values())))
        planted_terms = {p: t + nudge for p, t in terms.items()}
        return (out[0], planted_terms) if isinstance(out, tuple) else planted_terms

    monkeypatch.setattr(owner, name, planted)
    moved = RULE_CALLS[rule](graph, inputs, target)
    assert any(not torch.equal(moved[p], honest[p]) for p in honest), "the plant is not in the rule's path"
    caught = locality_audit(graph, inputs, target, rule=rule)
    assert caught and not all(r.local for r in caught)


RULE_CALLS = {"zil": lambda g, x, y: pcsim.zil(g, x, y),
              "fa-zil": lambda g, x, y: pcsim.fa_zil(g, x, y, mode="autonomous"),
              "il": lambda g, x, y: pcsim.il(g, x, y, steps=5)}


def _attribute(dotted: str):
    import importlib

    module, _, cls = dotted.rpartition(".")
    return getattr(importlib.import_module(module), cls)


def test_energy_trace_refuses_negative_steps():
    # before: steps=-1 returned an empty trace for every population
    module = torch.nn.Sequential(torch.nn.Linear(3, 2)).double()
    x, y = torch.randn(2, 3, dtype=torch.float64), torch.randn(2, 2, dtype=torch.float64)
    with pytest.raises(ValueError, match="steps must be >= 0, got -1"):
        energy_trace(pcsim.trace(module, x), (x,), y, steps=-1)


class _Siamese(torch.nn.Module):
    """One encoder applied to two inputs at the same depth: its parameters are shared, but within one level."""

    def __init__(self):
        super().__init__()
        self.enc = torch.nn.Linear(4, 5)
        self.head = torch.nn.Linear(5, 3)

    def forward(self, a, b):
        return self.head(torch.tanh(self.enc(a)) * torch.tanh(self.enc(b)))


def test_timing_sensitivity_measures_a_parameter_shared_within_one_level():
    # before: any parameter read by two vertices was left out, so the encoder's level was a row of NaN
    torch.manual_seed(0)
    module = _Siamese().double()
    inputs = (torch.randn(3, 4, dtype=torch.float64), torch.randn(3, 4, dtype=torch.float64))
    target = torch.randn(3, 3, dtype=torch.float64)
    graph = pcsim.trace(module, *inputs)
    levels, offsets, matrix = timing_sensitivity(graph, inputs, target, offsets=[-1, 0, 1])
    encoder = levels.index(graph.level().min_distance["enc"])
    row = dict(zip(offsets, matrix[encoder], strict=True))
    assert row[0] <= tolerance(torch.float64), row
    assert row[-1] == 1.0, row  # a step early the error wave has not arrived: no update at all
    assert row[1] > 1e-6, row


def test_timing_sensitivity_says_which_cells_are_inf_and_why():
    # before: a late update overflowed (Z-IL's gamma = 1 state grows with the delay) and the table held inf, no word
    from pcsim.dynamics import DivergenceWarning

    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.Tanh(), torch.nn.Linear(6, 6), torch.nn.Tanh(),
                                 torch.nn.Linear(6, 3)).float()  # float32: overflows within two hundred steps
    x, y = torch.randn(2, 4, dtype=torch.float32), torch.randn(2, 3, dtype=torch.float32)
    graph = pcsim.trace(module, x)
    with pytest.warns(DivergenceWarning, match="inf") as record:
        levels, offsets, matrix = timing_sensitivity(graph, x, y, offsets=[0, 200])
    assert np.all(matrix[:, 0] <= tolerance(torch.float32)), matrix  # on time: Z-IL, equal to autograd
    message = str(record[0].message)
    for i, d in enumerate(levels):
        named = f"level {d} at offset 200 (overflowed torch.float32)" in message
        assert named == bool(np.isinf(matrix[i, 1])), (d, matrix, message)
    assert np.isinf(matrix[:, 1]).any(), matrix
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", DivergenceWarning)  # nothing to explain: no warning
        timing_sensitivity(graph, x, y, offsets=[0, 1])


def test_timing_sensitivity_refuses_offsets_that_are_not_whole_steps():
    # before: offset 0.5 matched no step, so every level's update was zero and its cell read 1.0, no word
    graph, inputs, target = _problem()
    with pytest.raises(ValueError, match="each offset must be an integer, got 0.5"):
        timing_sensitivity(graph, inputs, target, offsets=[0, 0.5])
    with pytest.raises(ValueError, match="offsets must be an iterable"):
        timing_sensitivity(graph, inputs, target, offsets=1)


def _literal_energy(module, x, y, gamma, steps):
    """F = sum 1/2 ||x_i - mu_i||^2 + 1/2 ||out - y||^2 for Linear-Tanh-Linear, descended in x by autograd."""
    lin1, _, lin2 = module
    with torch.no_grad():
        h = [lin1(x)]
        h.append(torch.tanh(h[0]))
    h = [v.clone().requires_grad_() for v in h]
    energies = []
    for _ in range(steps + 1):
        f = (0.5 * ((h[0] - lin1(x)) ** 2).sum() + 0.5 * ((h[1] - torch.tanh(h[0])) ** 2).sum()
             + 0.5 * ((lin2(h[1]) - y) ** 2).sum())
        energies.append(float(f.detach()))
        grads = torch.autograd.grad(f, h)
        h = [(v - gamma * g).detach().requires_grad_() for v, g in zip(h, grads, strict=True)]
    return np.array(energies)


def _small_tanh_net():
    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Linear(4, 5), torch.nn.Tanh(), torch.nn.Linear(5, 3))
    x, y = torch.randn(3, 4), torch.randn(3, 3)
    return module, x, y, pcsim.trace(module, x)


def test_energy_trace_says_when_the_relaxation_diverged():
    # before: at gamma past the stable rate the trace held inf with no word (il raises there)
    from pcsim.dynamics import DivergenceWarning

    module, x, y, graph = _small_tanh_net()
    literal = _literal_energy(module, x, y, 5.0, 400)
    assert not np.isfinite(literal[-1]), literal[-5:]  # the oracle diverges too at gamma = 5
    with pytest.warns(DivergenceWarning, match="diverged at gamma = 5.0"):
        trace = energy_trace(graph, x, y, gamma=5.0, steps=400)
    assert not np.isfinite(sum(trace.values())[-1])
    stable = energy_trace(graph, x, y, gamma=0.1, steps=20)  # no warning at a stable rate, and the oracle's F
    np.testing.assert_allclose(sum(stable.values()), _literal_energy(module, x, y, 0.1, 20),
                               rtol=tolerance(torch.float64))
    with pytest.raises(ValueError, match="steps must be an integer, got 2.5"):
        energy_trace(graph, x, y, steps=2.5)


def test_energy_trace_says_when_the_energy_climbed_without_overflowing():
    # before: at gamma = 2 the trace rose from 3.7 to 3.5e13 in 30 steps (the oracle's too) with no word
    from pcsim.dynamics import DivergenceWarning

    module, x, y, graph = _small_tanh_net()
    literal = _literal_energy(module, x, y, 2.0, 30)
    assert np.isfinite(literal).all() and literal[-1] > 1e6 * literal[0]
    with pytest.warns(DivergenceWarning, match=f"diverged at gamma = 2.0: the energy, .* rose from {literal[0]:.4g}"):
        trace = energy_trace(graph, x, y, gamma=2.0, steps=30)
    np.testing.assert_allclose(sum(trace.values()), literal, rtol=tolerance(torch.float64))  # right: it had to say it


def test_il_convergence_marks_a_diverged_setting_and_goes_on():
    """A setting past the stable rate (il refuses it) is a row of inf relative error and NaN angle, named in a
    warning; the other rows are il's as called directly. Oracle: plain PC's energy climbs at gamma = 1."""
    from pcsim.dynamics import DivergenceWarning
    from tests.algorithms import plain_pc
    from tests.algorithms.test_descent import _net

    seq, x, y = _net()
    _, f0, f1 = plain_pc.il(seq, x, y, "mse", 1.0, 10)
    assert f1 > f0
    graph = pcsim.trace(seq, x)
    with pytest.warns(DivergenceWarning, match="1 setting.* diverged.*: gamma 1.0, 10 steps"):
        rows = il_convergence(graph, (x,), y, gammas=(0.2, 1.0), steps=(10,), fixed_prediction=(False,))
    assert rows[1]["relative_error"] == float("inf") and np.isnan(rows[1]["angle_deg"])
    ref = plain_pc.il(seq, x, y, "mse", 0.2, 10)[0]
    bp = torch.autograd.grad(0.5 * ((seq(x) - y) ** 2).sum(), list(seq.parameters()))
    flat = torch.cat([g.reshape(-1) for g in bp])
    rel = torch.cat([(ref[n] - g).reshape(-1) for n, g in zip(ref, bp, strict=True)]).norm() / flat.norm()
    assert rows[0]["relative_error"] == pytest.approx(float(rel), rel=tolerance(torch.float64))


def test_il_convergence_marks_fixed_prediction_at_a_rate_where_it_never_settles():
    # before: the gamma = 2 row held IL's update 1e5 times autograd's gradient away (the oracle's too), as a number
    from pcsim.dynamics import DivergenceWarning
    from tests.algorithms import plain_pc
    from tests.algorithms.test_descent import _autograd, _far, _net

    seq, x, y = _net()
    assert _far(plain_pc.il_fixed_prediction(seq, x, y, "mse", 2.0, 40), _autograd(seq, x, y)) > 1e3
    graph = pcsim.trace(seq, x)
    with pytest.warns(DivergenceWarning, match="gamma 2.0, 40 steps, fixed prediction .*gamma must be < 2"):
        rows = il_convergence(graph, (x,), y, gammas=(1.0, 2.0), steps=(40,), fixed_prediction=(True,))
    assert rows[0]["relative_error"] <= tolerance(torch.float64)  # gamma 1 and 40 >= depth steps: BP's
    assert rows[1]["relative_error"] == float("inf") and np.isnan(rows[1]["angle_deg"])
    with pytest.raises(ValueError, match="gamma"):  # any other bad setting still stops the sweep
        il_convergence(graph, (x,), y, gammas=(-1.0,), steps=(4,), fixed_prediction=(True,))


def test_a_callable_rule_without_an_update_for_a_parameter_is_named():
    # before: KeyError 'a.weight' from inside the audit
    graph, inputs, target = _problem()
    with pytest.raises(ValueError, match=r"no update \(a tensor\) for parameter '.*weight' of vertex"):
        locality_audit(graph, inputs, target, rule=lambda problem, values, errors, vertex: {})


class _Twice(torch.nn.Module):
    """One layer applied at two depths: its parameters are shared across levels."""

    def __init__(self):
        super().__init__()
        self.inner = torch.nn.Linear(4, 4)
        self.head = torch.nn.Linear(4, 3)

    def forward(self, x):
        return self.head(torch.tanh(self.inner(torch.tanh(self.inner(x)))))


def test_timing_sensitivity_says_which_rows_are_nan_and_why():
    # before: the levels whose parameters are all shared with other levels were rows of NaN, no word (a GRU's table
    # was NaN throughout)
    torch.manual_seed(0)
    module = _Twice().double()
    x, y = torch.randn(2, 4, dtype=torch.float64), torch.randn(2, 3, dtype=torch.float64)
    graph = pcsim.trace(module, x)
    with pytest.warns(UserWarning, match="rows are NaN: their parameters are shared") as record:
        levels, offsets, matrix = timing_sensitivity(graph, x, y, offsets=[0, 1])
    message = str(record[0].message)
    nan_rows = [d for d, row in zip(levels, matrix, strict=True) if np.isnan(row).all()]
    assert len(nan_rows) == 2, (levels, matrix)  # the two applications of `inner`; `head`'s row is measured
    for d in nan_rows:
        assert f"level {d}: inner.bias, inner.weight" in message, message
    assert not np.isnan(matrix[levels.index(graph.level().min_distance["head"])]).any()


def test_energy_trace_is_ils_relaxation_with_its_output_precision_and_fixed_prediction():
    """energy_trace took neither output_precision nor fixed_prediction: the trace of il(output_precision=p) could
    not be drawn. Oracle: gradient descent at rate gamma on F = p L(out) + sum 1/2 ||x_n - f_n(parents)||^2 over
    the hidden values, its gradient from autograd."""
    torch.manual_seed(0)
    l1, l2 = torch.nn.Linear(3, 4), torch.nn.Linear(4, 2)
    x, y = torch.randn(5, 3), torch.randn(5, 2)
    p, gamma, steps = 0.3, 0.2, 6
    graph = pcsim.trace(torch.nn.Sequential(l1, torch.nn.Tanh(), l2), x)
    trace = energy_trace(graph, (x,), y, gamma=gamma, steps=steps, output_precision=p)

    with torch.no_grad():
        h0 = l1(x)
        h1 = torch.tanh(h0)
    expected = []
    for _ in range(steps + 1):
        h0, h1 = h0.detach().requires_grad_(), h1.detach().requires_grad_()
        parts = (0.5 * (h0 - l1(x)).square().sum(), 0.5 * (h1 - torch.tanh(h0)).square().sum(),
                 p * 0.5 * (l2(h1) - y).square().sum())
        expected.append([float(e) for e in parts])
        g0, g1 = torch.autograd.grad(sum(parts), (h0, h1))
        h0, h1 = h0 - gamma * g0, h1 - gamma * g1
    hidden = [n for n in graph.latent if n not in graph.outputs]
    names = [*hidden, *graph.outputs]
    got = np.array([trace[n] for n in names]).T
    assert np.abs(got - np.array(expected)).max() <= tolerance(torch.float64) * np.abs(expected).max()

    # fixed prediction: the hidden energies are 1/2 ||eps||^2 of the errors il_path gives with the same settings
    with warnings.catch_warnings():  # fixed predictions move the errors to BP's, not down the energy: no alarm
        warnings.simplefilter("error", DivergenceWarning)
        fixed = energy_trace(graph, (x,), y, gamma=gamma, steps=steps, output_precision=p, fixed_prediction=True)
    total = np.sum(list(fixed.values()), axis=0)
    assert np.isfinite(total).all() and total[-1] > total[0]  # it rose, as it may here
    path = il_path(graph, (x,), y, gamma=gamma, steps=steps, output_precision=p, fixed_prediction=True)
    for n in hidden:
        assert np.allclose(fixed[n], [0.5 * float(e[n].square().sum()) for e in path], rtol=tolerance(torch.float64))
    assert not np.allclose(fixed[hidden[0]], trace[hidden[0]])  # the setting did reach the relaxation
