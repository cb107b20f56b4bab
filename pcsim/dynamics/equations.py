"""The PC equations as data: what every backend integrates, written once.

`VectorField` (field.py) evaluates these with each vertex's local prediction and VJP; the Brian2
backend renders the same strings into NeuronGroup and Synapses equations. Symbols:
x value population, err error population, mu prediction from the parents, fb = sum over
children of J^T err (feedback), hebb = (d mu / d theta)^T err (the Hebbian term), gate the
plasticity gate, target_err = -dL/dmu at the output once the target is shown.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Equations:
    """Population and synapse equations, in Brian2's notation (units dropped: all are rates)."""

    value: str = "dx/dt = (-err + fb) / tau_x : 1"
    error_leaky: str = "derr/dt = (x - mu - err) / tau_e : 1"
    error_instant: str = "err = x - mu : 1"
    output_error_leaky: str = "derr/dt = (target_err - err) / tau_e : 1"
    output_error_instant: str = "err = target_err : 1"
    free_output: str = "dx/dt = -err / tau_x : 1"  # before the target: the output follows mu
    plasticity: str = "dw/dt = gate * hebb / tau_w : 1"


EQUATIONS = Equations()
