"""The op table (one entry per ATen op) and each vertex's local computations (ops/local.py, ops/vjp.py)."""

from pcsim.ops.local import Linearisation, call
from pcsim.ops.table import OPS, OpEntry, entry, supported_summary

__all__ = ["OPS", "OpEntry", "entry", "Linearisation", "call", "supported_summary"]
