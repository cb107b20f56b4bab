"""Property test: Z-IL and Fa-Z-IL equal autograd on 80 random DAGs.

The DAGs (tests/strategies.py) have random depth and widths, skip edges across several levels,
multiplicative vertices, parameters shared across depths and several outputs with mixed losses.
"""

import pytest
import torch
from hypothesis import HealthCheck, given, settings

import pcsim
from pcsim.numerics import relative_difference, rounding_floor, tolerance
from tests.strategies import autograd_reference, random_dag_modules


def _target(case):
    return case.targets if len(case.targets) > 1 else case.targets[0]


@pytest.mark.slow
@settings(max_examples=80, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(case=random_dag_modules())
def test_exact_rules_match_autograd_on_random_dags(case):
    reference = autograd_reference(case)
    graph = pcsim.trace(case.module, *case.inputs)
    for rule, run in (("zil", pcsim.zil), ("wavefront", lambda *a, **k: pcsim.fa_zil(*a, mode="wavefront", **k)),
                      ("autonomous", lambda *a, **k: pcsim.fa_zil(*a, mode="autonomous", **k))):
        grads = run(graph, case.inputs, _target(case), case.losses)
        scale = max(float(g.norm()) for g in reference.values())
        floor = rounding_floor(scale, torch.float64)
        for name, ref in reference.items():
            rel = relative_difference(grads[name], ref, floor)
            assert rel <= tolerance(torch.float64), f"{rule} {name}: rel {rel:.2e}\n{case.description}"
