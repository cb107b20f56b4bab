"""Elementwise functions of one population as one-to-one synapses: f(x_pre) forward, f'(x_pre) err_post
back, with the op's own arguments; functions Brian2 lacks (erf) declared as data in `FUNCTIONS`."""

from __future__ import annotations

import numpy as np

from pcsim.backends.brian2.synapses import PRODUCT, WHY, Edge, bind, single_parent, size, unsupported

SIGMOID = "(1 / (1 + exp(-x_pre)))"
# One-argument activations: (forward, derivative) in x_pre; the derivatives of sqrt, rsqrt and reciprocal as
# torch's autograd formulas write them (rounding then agrees to ~1e-16).
PLAIN = {
    "relu": ("x_pre * int(x_pre > 0)", "int(x_pre > 0)"),
    "tanh": ("tanh(x_pre)", "(1 - tanh(x_pre)**2)"),
    "sigmoid": ("1 / (1 + exp(-x_pre))", f"{SIGMOID} * (1 - 1 / (1 + exp(-x_pre)))"),
    "silu": ("x_pre / (1 + exp(-x_pre))", f"{SIGMOID} * (1 + x_pre * (1 - 1 / (1 + exp(-x_pre))))"),
    "exp": ("exp(x_pre)", "exp(x_pre)"),
    "sqrt": ("sqrt(x_pre)", "1 / (2 * sqrt(x_pre))"),
    "rsqrt": ("1 / sqrt(x_pre)", "-0.5 * (1 / sqrt(x_pre)) ** 3"),
    "reciprocal": ("1 / x_pre", "-(1 / x_pre) * (1 / x_pre)"),
    "log": ("log(x_pre)", "1 / x_pre"),
    "abs": ("abs(x_pre)", "sign(x_pre)"),
    "square": ("x_pre * x_pre", "2.0 * x_pre"),
    "sin": ("sin(x_pre)", "cos(x_pre)"),
    "cos": ("cos(x_pre)", "-sin(x_pre)"),
    "erf": ("erf(x_pre)", "1.1283791670955126 * exp(-x_pre * x_pre)"),
}


def _act_leaky(a):
    s = float(a["negative_slope"])
    return (f"x_pre * (int(x_pre > 0) + {s!r} * int(x_pre <= 0))", f"(int(x_pre > 0) + {s!r} * int(x_pre <= 0))")


def _act_elu(a):
    al = float(a["alpha"])
    return (f"x_pre * int(x_pre > 0) + {al!r} * (exp(x_pre) - 1) * int(x_pre <= 0)",
            f"(int(x_pre > 0) + {al!r} * exp(x_pre) * int(x_pre <= 0))")


def _act_softplus(a):
    beta, thr = float(a["beta"]), float(a["threshold"])
    above = f"int({beta!r} * x_pre > {thr!r})"
    return (f"{above} * x_pre + (1 - {above}) * log(1 + exp({beta!r} * x_pre)) / {beta!r}",
            f"({above} + (1 - {above}) / (1 + exp(-{beta!r} * x_pre)))")


def _clip(lo, hi, eq: str):
    """x clipped to [lo, hi] (either bound may be None); at a bound the derivative is 1 when eq is '='
    (clamp) and 0 when it is '' (hardtanh), as torch's."""
    if lo is not None and hi is not None:
        return f"clip(x_pre, {lo!r}, {hi!r})", f"int(x_pre >{eq} {lo!r}) * int(x_pre <{eq} {hi!r})"
    if lo is not None:
        return f"x_pre * int(x_pre > {lo!r}) + {lo!r} * int(x_pre <= {lo!r})", f"int(x_pre >= {lo!r})"
    if hi is not None:
        return f"x_pre * int(x_pre < {hi!r}) + {hi!r} * int(x_pre >= {hi!r})", f"int(x_pre <= {hi!r})"
    return "x_pre", "1"


def _act_clamp(a):
    lo, hi = a["min"], a["max"]
    if not all(v is None or (isinstance(v, int | float) and not isinstance(v, bool)) for v in (lo, hi)):
        return None  # a population or tensor as a bound
    return _clip(None if lo is None else float(lo), None if hi is None else float(hi), "=")


def _act_pow(a):
    e = a.get("exponent")
    if isinstance(e, bool) or not isinstance(e, int | float):
        return None  # a population as the exponent, or a number to a population's power
    e = float(e)
    special = {0.0: ("0 * x_pre + 1", "0"), 1.0: ("x_pre", "1"), 2.0: PLAIN["square"]}
    return special.get(e, (f"x_pre ** {e!r}", f"{e!r} * x_pre ** {e - 1.0!r}"))


_SQRT1_2 = 0.7071067811865476  # M_SQRT1_2, as torch's gelu kernels
_PDF = 0.3989422804014327  # M_2_SQRTPI * M_SQRT1_2 * 0.5 = 1 / sqrt(2 pi)
_KBETA = 0.7978845608028654  # M_SQRT2 * M_2_SQRTPI * 0.5 = sqrt(2 / pi)


def _act_gelu(a):
    if a["approximate"] == "none":
        cdf = f"0.5 * (1 + erf(x_pre * {_SQRT1_2!r}))"
        return f"x_pre * {cdf}", f"({cdf} + x_pre * exp(-0.5 * x_pre * x_pre) * {_PDF!r})"
    if a["approximate"] == "tanh":
        t = f"tanh({_KBETA!r} * (x_pre + 0.044715 * x_pre * x_pre * x_pre))"
        return (f"0.5 * x_pre * (1 + {t})",
                f"(0.5 * (1 + {t}) + 0.5 * x_pre * (1 - {t} ** 2) * {_KBETA!r} * (1 + 3 * 0.044715 * x_pre * x_pre))")
    return None


# op -> (its argument names after the input, defaults, arguments -> (forward, derivative), None if not rendered)
ACTIVATIONS = {
    "leaky_relu": (("negative_slope",), {"negative_slope": 0.01}, _act_leaky),
    "elu": (("alpha",), {"alpha": 1.0}, _act_elu),
    "softplus": (("beta", "threshold"), {"beta": 1.0, "threshold": 20.0}, _act_softplus),
    "pow": (("exponent",), {}, _act_pow),
    "hardtanh": (("min_val", "max_val"), {"min_val": -1.0, "max_val": 1.0},
                 lambda a: _clip(float(a["min_val"]), float(a["max_val"]), "")),
    "clamp": (("min", "max"), {"min": None, "max": None}, _act_clamp),
    "gelu": ((), {"approximate": "none"}, _act_gelu),
    **{op: ((), {}, lambda a, fd=fd: fd) for op, fd in PLAIN.items()},
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
    names = ("input", *names)
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
    idx = np.arange(size(vertex.shape), dtype=np.int64)
    return [Edge(0, idx, idx.copy(), rendered[0], f"{rendered[1]} * err_post")], []
