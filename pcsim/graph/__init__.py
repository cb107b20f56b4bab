"""Graph IR, levelling and tracing."""

from pcsim.graph.ir import ConstArg, Graph, ParamArg, ParentArg, Vertex
from pcsim.graph.level import level
from pcsim.graph.trace import trace

__all__ = ["Graph", "Vertex", "ParentArg", "ParamArg", "ConstArg", "level", "trace"]
