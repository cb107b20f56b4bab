"""Backends: solver objects that integrate the dynamics' vector field, each registering itself in
`pcsim.dynamics.solver.SOLVERS` at import. torch (fixed step, any device), scipy (solve_ivp; the
reference), brian2 (NeuronGroups and Synapses; Brian2 itself is imported only when one runs)."""

from pcsim.backends.brian2 import Brian2
from pcsim.backends.scipy import Scipy
from pcsim.backends.torch import RK4, Euler
from pcsim.backends.torch_adaptive import Dopri5, Tsit5

__all__ = ["Euler", "RK4", "Dopri5", "Tsit5", "Scipy", "Brian2"]
