"""The op table (one entry per ATen op) and each vertex's local VJP (ops/local.py)."""

from pcsim.ops.local import Autograd, call, linearise
from pcsim.ops.table import OPS, OpEntry, entry, supported_summary

__all__ = ["OPS", "OpEntry", "entry", "Autograd", "call", "linearise", "supported_summary"]
