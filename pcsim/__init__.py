"""pcsim: predictive coding on computational graphs.

Trace any torch.nn.Module into a graph of value and error populations, then run inference
learning (IL), Z-IL and Fa-Z-IL on it; Z-IL's weight updates equal backprop's to rounding.
"""

from pcsim.algorithms import Schedule, bp, fa_zil, il, zil
from pcsim.algorithms.ipc import ipc
from pcsim.backends import RK4, Brian2, Dopri5, Euler, Scipy, Tsit5
from pcsim.capture import trace
from pcsim.check import CheckReport, check, check_rules
from pcsim.dynamics import SOLVERS, Record, SimulationError, Trajectory, after, discretise, simulate
from pcsim.errors import (
    DivergenceError,
    GraphError,
    InputError,
    OracleError,
    PcsimError,
    TraceError,
    UnsupportedOpError,
)
from pcsim.graph import Graph, Vertex
from pcsim.numerics import tolerance
from pcsim.ops.table import RECURRENT_LAYERS

__version__ = "0.1.0"
__all__ = ["trace", "RECURRENT_LAYERS", "Graph", "Vertex", "bp", "il", "ipc", "zil", "fa_zil", "Schedule", "check",
           "check_rules", "CheckReport", "tolerance", "simulate", "Euler", "RK4", "Dopri5", "Tsit5", "Scipy", "Brian2",
           "SOLVERS", "discretise", "Trajectory",
           "Record", "after", "SimulationError", "PcsimError",
           "UnsupportedOpError", "TraceError", "GraphError", "InputError", "OracleError",
           "DivergenceError"]
