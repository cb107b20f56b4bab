"""Property test: on random hand-built DAGs, level() is levelled, inserts the closed-form number of
identities (each latent parent p needs L(p) - min_c L(c) - 1, L = longest path to an output), and
leaves bp's gradients equal to an independent autograd evaluation of the same DAG."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import pcsim
from tests.graph.dags import build_graph, example_data, latent_sinks, path_lengths, reference_grads
from tests.graph.helpers import assert_grads_match


@st.composite
def dag_specs(draw):
    inputs = tuple(f"x{i}" for i in range(draw(st.integers(1, 2))))
    names = list(inputs)
    spec: dict[str, tuple[str, ...]] = {}
    for i in range(draw(st.integers(2, 8))):
        k = draw(st.integers(1, min(3, len(names))))
        parents = draw(st.lists(st.sampled_from(names), min_size=k, max_size=k, unique=True))
        if all(p in inputs for p in parents) and len(names) > len(inputs):
            parents.append(names[-1])  # mostly chain onto the previous vertex so depth grows
        spec[f"v{i}"] = tuple(parents)
        names.append(f"v{i}")
    sinks = latent_sinks(spec)
    n_out = draw(st.integers(1, len(sinks)))
    outputs = tuple(sinks[-n_out:])  # other sinks stay dead ends, which level() must leave alone
    return spec, inputs, outputs, draw(st.integers(0, 2**16))


def expected_identities(spec, outputs) -> int:
    lengths = path_lengths(spec, outputs)
    level = {v: max(ls) for v, ls in lengths.items()}
    total = 0
    for p in level:
        kids = [level[v] for v, ps in spec.items() if p in ps and v in level]
        if kids:
            total += max(0, level[p] - min(kids) - 1)
    return total


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(dag_specs())
def test_level_random_dags(case):
    spec, inputs, outputs, seed = case
    g = build_graph(spec, inputs=inputs, outputs=outputs, seed=seed)
    lg = g.level()
    assert lg.is_levelled
    assert lg.n_identity == expected_identities(spec, outputs)
    assert (lg is g) == (lg.n_identity == 0)
    lengths = path_lengths({v.name: v.parents for v in lg.vertices if not v.is_input}, outputs)
    assert all(len(ls) == 1 for ls in lengths.values())
    assert all(lg[i].op == "identity" and lg[i].inserted for i in lg.identity_vertices)

    x, y = example_data(g, seed)
    ref = reference_grads(spec, g.params, inputs, x, outputs, y)
    assert_grads_match(pcsim.bp(g, x, y), ref)
    assert_grads_match(pcsim.bp(lg, x, y), ref)
