"""Op registry: each op's forward (a torch call) and its local VJP (ops/local.py)."""

from pcsim.ops.local import Linearisation, call
from pcsim.ops.registry import OPS, supported_summary

__all__ = ["OPS", "Linearisation", "call", "supported_summary"]
