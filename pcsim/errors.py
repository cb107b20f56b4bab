"""The exceptions pcsim raises at its boundary. Each message names what is at fault."""


class PcsimError(Exception):
    """Base class of every error pcsim raises on purpose."""


class UnsupportedOpError(PcsimError, NotImplementedError):
    """A traced module uses an operation pcsim has no local rule for."""


class TraceError(PcsimError):
    """torch.export could not capture the module, or the captured program failed on the example inputs."""


class GraphError(PcsimError, ValueError):
    """A graph is malformed: a cycle, an unknown parent, a missing shape, no output."""


class DivergenceError(PcsimError, ArithmeticError):
    """An iterative rule's state became NaN or inf (a step too large for the network's curvature)."""


class OracleError(PcsimError, RuntimeError):
    """torch autograd, the oracle `check` compares with, cannot differentiate the module as it runs."""


class InputError(PcsimError, ValueError):
    """Inputs or targets do not fit the graph: count, shape or dtype."""


def first_line(error: BaseException, empty: str = "") -> str:
    """The first line of an error's message (torch's run to pages), `empty` if it has none."""
    text = str(error).strip()
    return text.splitlines()[0] if text else empty
