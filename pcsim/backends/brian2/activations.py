"""Elementwise functions of one population as one-to-one synapses: f(x_pre) forward, f'(x_pre) err_post
back, with the op's own arguments; functions Brian2 lacks (erf) declared as data in `FUNCTIONS`."""

from __future__ import annotations

import numpy as np

from pcsim.backends.brian2.synapses import PRODUCT, WHY, Edge, bind, single_parent, unsupported


# Elementwise activations: (forward in x_pre, derivative in x_pre) with the op's own arguments.
def _act_relu(a):
    return "x_pre * int(x_pre > 0)", "int(x_pre > 0)"


def _act_leaky(a):
    s = float(a.get("negative_slope", 0.01))
    return (f"x_pre * (int(x_pre > 0) + {s!r} * int(x_pre <= 0))", f"(int(x_pre > 0) + {s!r} * int(x_pre <= 0))")


def _act_elu(a):
    al = float(a.get("alpha", 1.0))
    return (f"x_pre * int(x_pre > 0) + {al!r} * (exp(x_pre) - 1) * int(x_pre <= 0)",
            f"(int(x_pre > 0) + {al!r} * exp(x_pre) * int(x_pre <= 0))")


def _act_softplus(a):
    beta, thr = float(a.get("beta", 1.0)), float(a.get("threshold", 20.0))
    above = f"int({beta!r} * x_pre > {thr!r})"
    return (f"{above} * x_pre + (1 - {above}) * log(1 + exp({beta!r} * x_pre)) / {beta!r}",
            f"({above} + (1 - {above}) / (1 + exp(-{beta!r} * x_pre)))")


def _act_hardtanh(a):
    lo, hi = float(a.get("min_val", -1.0)), float(a.get("max_val", 1.0))
    return f"clip(x_pre, {lo!r}, {hi!r})", f"int(x_pre > {lo!r}) * int(x_pre < {hi!r})"


def _act_clamp(a):
    lo, hi = a.get("min"), a.get("max")
    if not all(v is None or (isinstance(v, int | float) and not isinstance(v, bool)) for v in (lo, hi)):
        return None  # a population or tensor as a bound
    if lo is not None and hi is not None:
        lo, hi = float(lo), float(hi)
        return f"clip(x_pre, {lo!r}, {hi!r})", f"int(x_pre >= {lo!r}) * int(x_pre <= {hi!r})"
    if lo is not None:
        lo = float(lo)
        return f"x_pre * int(x_pre > {lo!r}) + {lo!r} * int(x_pre <= {lo!r})", f"int(x_pre >= {lo!r})"
    if hi is not None:
        hi = float(hi)
        return f"x_pre * int(x_pre < {hi!r}) + {hi!r} * int(x_pre >= {hi!r})", f"int(x_pre <= {hi!r})"
    return "x_pre", "1"


def _act_pow(a):
    e = a.get("exponent")
    if isinstance(e, bool) or not isinstance(e, int | float):
        return None  # a population as the exponent, or a number to a population's power
    e = float(e)
    if e == 0.0:
        return "0 * x_pre + 1", "0"
    if e == 1.0:
        return "x_pre", "1"
    if e == 2.0:
        return "x_pre * x_pre", "2.0 * x_pre"
    return f"x_pre ** {e!r}", f"{e!r} * x_pre ** {e - 1.0!r}"


_SQRT1_2 = 0.7071067811865476  # M_SQRT1_2, as torch's gelu kernels
_PDF = 0.3989422804014327  # M_2_SQRTPI * M_SQRT1_2 * 0.5 = 1 / sqrt(2 pi)
_KBETA = 0.7978845608028654  # M_SQRT2 * M_2_SQRTPI * 0.5 = sqrt(2 / pi)


def _act_gelu(a):
    approx = a.get("approximate", "none")
    if approx == "none":
        cdf = f"0.5 * (1 + erf(x_pre * {_SQRT1_2!r}))"
        return f"x_pre * {cdf}", f"({cdf} + x_pre * exp(-0.5 * x_pre * x_pre) * {_PDF!r})"
    if approx == "tanh":
        t = f"tanh({_KBETA!r} * (x_pre + 0.044715 * x_pre * x_pre * x_pre))"
        return (f"0.5 * x_pre * (1 + {t})",
                f"(0.5 * (1 + {t}) + 0.5 * x_pre * (1 - {t} ** 2) * {_KBETA!r} * (1 + 3 * 0.044715 * x_pre * x_pre))")
    return None


ACTIVATIONS = {
    "relu": (("input",), {}, _act_relu),
    "leaky_relu": (("input", "negative_slope"), {"negative_slope": 0.01}, _act_leaky),
    "tanh": (("input",), {}, lambda a: ("tanh(x_pre)", "(1 - tanh(x_pre)**2)")),
    "sigmoid": (("input",), {}, lambda a: ("1 / (1 + exp(-x_pre))",
                                           "(1 / (1 + exp(-x_pre))) * (1 - 1 / (1 + exp(-x_pre)))")),
    "silu": (("input",), {}, lambda a: ("x_pre / (1 + exp(-x_pre))",
                                        "(1 / (1 + exp(-x_pre))) * (1 + x_pre * (1 - 1 / (1 + exp(-x_pre))))")),
    "elu": (("input", "alpha"), {"alpha": 1.0}, _act_elu),
    "softplus": (("input", "beta", "threshold"), {"beta": 1.0, "threshold": 20.0}, _act_softplus),
    "exp": (("input",), {}, lambda a: ("exp(x_pre)", "exp(x_pre)")),
    # the derivatives as torch's autograd formulas write them (rounding then agrees to ~1e-16)
    "sqrt": (("input",), {}, lambda a: ("sqrt(x_pre)", "1 / (2 * sqrt(x_pre))")),
    "rsqrt": (("input",), {}, lambda a: ("1 / sqrt(x_pre)", "-0.5 * (1 / sqrt(x_pre)) ** 3")),
    "reciprocal": (("input",), {}, lambda a: ("1 / x_pre", "-(1 / x_pre) * (1 / x_pre)")),
    "log": (("input",), {}, lambda a: ("log(x_pre)", "1 / x_pre")),
    "abs": (("input",), {}, lambda a: ("abs(x_pre)", "sign(x_pre)")),
    "square": (("input",), {}, lambda a: ("x_pre * x_pre", "2.0 * x_pre")),
    "sin": (("input",), {}, lambda a: ("sin(x_pre)", "cos(x_pre)")),
    "cos": (("input",), {}, lambda a: ("cos(x_pre)", "-sin(x_pre)")),
    "erf": (("input",), {}, lambda a: ("erf(x_pre)", "1.1283791670955126 * exp(-x_pre * x_pre)")),
    "pow": (("input", "exponent"), {}, _act_pow),
    "hardtanh": (("input", "min_val", "max_val"), {"min_val": -1.0, "max_val": 1.0}, _act_hardtanh),
    "clamp": (("input", "min", "max"), {"min": None, "max": None}, _act_clamp),
    "gelu": (("input",), {"approximate": "none"}, _act_gelu),
}

# Functions the expressions call that Brian2 does not provide, as data (runner.py makes the Brian2
# `Function`s where it builds the namespaces): name -> its implementation per code-generation target.
FUNCTIONS = {
    "erf": {
        "numpy": "scipy.special:erf",  # module:attribute
        "cython": ("from libc.math cimport erf as _libc_erf\n"
                   "cdef double pcsim_erf(double x):\n    return _libc_erf(x)\n", "pcsim_erf"),
        "cpp": ("inline double pcsim_erf(double x) { return erf(x); }", "pcsim_erf"),  # <cmath>
    },
}


def _activation(vertex, shapes, params, constants, values=None):
    names, defaults, render = ACTIVATIONS[vertex.op]
    a = bind(vertex, names, defaults)
    if len(vertex.parents) > 1:
        raise unsupported(vertex, f"'{vertex.op}' of {len(vertex.parents)} populations ({PRODUCT}); {WHY}")
    single_parent(vertex, a["input"])
    if tuple(shapes[0]) != tuple(vertex.shape):
        raise unsupported(vertex, "an elementwise op that changes shape")
    extra = sorted(k for k in a if k not in names and k not in defaults and k != "inplace")
    if extra:
        raise unsupported(vertex, f"arguments {extra} have no Brian2 rendering")
    rendered = render(a)
    if rendered is None:
        shown = {k: v for k, v in a.items() if k != "input"}
        raise unsupported(vertex, f"'{vertex.op}' with arguments {shown} (a population where a number is "
                                   f"expected, or an unknown variant); {WHY}")
    fwd, der = rendered
    n = int(np.prod(vertex.shape, dtype=np.int64))
    idx = np.arange(n, dtype=np.int64)
    return [Edge(0, idx, idx.copy(), fwd, f"{der} * err_post")], []
