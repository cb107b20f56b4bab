"""Continuous-time PC: populations as ODEs, protocols and gates, monitors, discretisation."""

from pcsim.dynamics.discretise import Discretisation, discretise
from pcsim.dynamics.divergence import DivergenceWarning
from pcsim.dynamics.equations import EQUATIONS, Equations
from pcsim.dynamics.field import VectorField
from pcsim.dynamics.protocol import After, Always, Gate, Off, UserGate, Windows, after
from pcsim.dynamics.recording import Record, SimulationError
from pcsim.dynamics.simulate import simulate
from pcsim.dynamics.solver import SOLVERS, Solver
from pcsim.dynamics.trajectory import Trajectory

__all__ = ["simulate", "discretise", "Discretisation", "Trajectory", "VectorField", "Record",
           "SimulationError", "EQUATIONS", "Equations", "Gate", "Off", "Always", "After", "Windows",
           "UserGate", "after", "Solver", "SOLVERS", "DivergenceWarning"]
