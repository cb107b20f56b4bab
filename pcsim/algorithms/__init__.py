"""The discrete algorithms: BP (the oracle), IL, Z-IL and Fa-Z-IL, over one Problem type."""

from pcsim.algorithms.bp import bp
from pcsim.algorithms.fa_zil import fa_zil
from pcsim.algorithms.il import il
from pcsim.algorithms.losses import LOSSES, MSE, CrossEntropy, Loss
from pcsim.algorithms.problem import Problem
from pcsim.algorithms.schedule import Schedule
from pcsim.algorithms.zil import zil

__all__ = ["bp", "il", "zil", "fa_zil", "Problem", "Schedule", "Loss", "MSE", "CrossEntropy", "LOSSES"]
