"""Z-IL as the Euler discretisation of the ODEs: `simulate` with dt = tau_x, the 'zil' gates, and as many
steps as asked (200 by default), returning the accumulated plasticity. Registered as the rule 'zil-euler',
so `check`, the third-party suite and the CLI hold the continuous-time system to backprop on any graph the
discrete rules take. The populations hold once their window closes (`Windows.holds_from`), so a run of any
length gives the same updates.
"""

from __future__ import annotations

import torch

from pcsim.algorithms.schedule import Schedule
from pcsim.dynamics.simulate import simulate
from pcsim.graph.argument import takes_graph
from pcsim.graph.ir import Graph
from pcsim.ops.local import records_autograd


@takes_graph
@records_autograd
def zil_euler(graph: Graph, inputs, target, loss="mse", *, steps: int = 200, backend: str = "torch",
              leaky: bool = False, level: bool = True) -> dict[str, torch.Tensor]:
    """Euler with dt = tau_x = 1 for `steps` steps, Z-IL's gates; errors instantaneous, or leaky at tau_e = dt.

    backend: 'torch' (IL's step) or 'scipy' (its fixed-step Euler evaluates the vector field)."""
    needed = Schedule.for_errors(leaky).at_level(graph.level().depth) + 1  # through the last window
    if steps < needed:
        raise ValueError(f"zil-euler needs at least {needed} steps on this graph (its last window), got {steps}")
    tr = simulate(graph, inputs, target, loss=loss, backend=backend, method="euler", dt=1.0, tau_x=1.0,
                  tau_e=1.0 if leaky else 0.0, t_end=float(steps), plasticity="zil", record=[], level=level)
    ref = next(iter(graph.params.values()))
    return {k: torch.as_tensor(u, dtype=ref.dtype, device=ref.device) for k, u in tr.updates.items()}
