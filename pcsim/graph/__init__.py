"""The graph IR, levelling, layout and provenance (capture lives in pcsim.capture)."""

from pcsim.graph.ir import ConstArg, Graph, ParamArg, ParentArg, Vertex
from pcsim.graph.level import level

__all__ = ["Graph", "Vertex", "ParentArg", "ParamArg", "ConstArg", "level"]
