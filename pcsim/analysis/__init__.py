"""Plasticity-rule analysis: locality, timing sensitivity, IL-to-BP convergence, energy accounting."""

from pcsim.analysis.plasticity import LocalityReport, energy_trace, il_convergence, locality_audit, timing_sensitivity

__all__ = ["LocalityReport", "locality_audit", "timing_sensitivity", "il_convergence", "energy_trace"]
