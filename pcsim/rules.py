"""The learning rules, registered once: `check`, training and the benchmark read them from here.

A rule is a function `(graph, inputs, target, loss, **options) -> {parameter: dL/dtheta estimate}`
(autograd's sign, summed over the batch), with what its readers need to know about it:
- `exact`: equal to backprop to rounding (Z-IL's conditions); `check` and training hold it to that;
- `levelled`: it runs on the levelled graph (it levels the graph itself; `check` reports that one);
- `inference`: it takes IL's inference settings (`gamma`, `steps`), which training passes on;
- `options`: keyword arguments it is always called with (`fa-zil-autonomous` is `fa_zil(mode=...)`);
- `accepts`: the further settings it takes from its caller, such as `compile` (training passes these on);
- `additive`: its update is a sum of one term per sample, so the shards' updates under data-parallel training
  sum to the global batch's (iPC's weights move on the whole batch during its inference: not).

A new rule is one `register(Rule(...))`, here or in the rule's own module.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from pcsim.algorithms import bp, fa_zil, il, zil
from pcsim.algorithms.ipc import ipc
from pcsim.dynamics.zil_euler import zil_euler
from pcsim.graph.argument import did_you_mean


@dataclass(frozen=True)
class Rule:
    name: str
    fn: Callable[..., dict]
    summary: str
    exact: bool = False
    levelled: bool = False
    inference: bool = False
    options: Mapping[str, Any] = field(default_factory=dict)
    accepts: frozenset[str] = frozenset()
    additive: bool = True

    @cached_property
    def takes(self) -> frozenset[str] | None:
        """The options the rule's function takes by name, beyond (graph, inputs, target, loss); None: any."""
        params = inspect.signature(self.fn).parameters.values()
        if any(p.kind is p.VAR_KEYWORD for p in params):
            return None
        named = {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
        return frozenset(named - {"graph", "inputs", "target", "loss"})

    def __call__(self, graph, inputs, target, loss="mse", **options) -> dict:
        unknown = sorted(set(options) - self.takes) if options and self.takes is not None else []
        if unknown:  # Python's "got an unexpected keyword argument" named neither the rule nor what it takes
            options = sorted(self.takes - set(self.options))
            hint = did_you_mean(unknown[0], options) if len(unknown) == 1 else ""
            raise TypeError(f"rule '{self.name}' takes no option {', '.join(unknown)}{hint}; its options: "
                            f"{', '.join(options)}")
        # an option the rule fixes, given otherwise, would run another rule under this one's name
        clash = {k: v for k, v in options.items() if k in self.options and v != self.options[k]}
        if clash:
            fixed = ", ".join(f"{k}={self.options[k]!r}" for k in clash)
            given = ", ".join(f"{k}={v!r}" for k, v in clash.items())
            raise ValueError(f"rule '{self.name}' is {fixed}, got {given}; choose the rule that is")
        return self.fn(graph, inputs, target, loss, **{**self.options, **options})


RULES: dict[str, Rule] = {}


def register(rule: Rule) -> Rule:
    if rule.name in RULES:
        raise ValueError(f"a rule named '{rule.name}' is already registered")
    RULES[rule.name] = rule
    return rule


def get(name: str) -> Rule:
    try:
        return RULES[name]
    except KeyError:
        raise ValueError(f"unknown rule '{name}'; choose one of {sorted(RULES)}") from None


register(Rule("zil", zil, "Z-IL: the error wave, level d updated at step d (exact)", exact=True, levelled=True))
register(Rule("fa-zil", fa_zil, "Fa-Z-IL, wavefront mode: Z-IL at backprop's cost (exact)", exact=True,
              levelled=True, options={"mode": "wavefront"}, accepts=frozenset({"compile"})))
register(Rule("fa-zil-wavefront", fa_zil, "Fa-Z-IL, wavefront mode (the same as fa-zil)", exact=True,
              levelled=True, options={"mode": "wavefront"}, accepts=frozenset({"compile"})))
register(Rule("fa-zil-autonomous", fa_zil, "Fa-Z-IL with a local gate per vertex, no clock (exact)", exact=True,
              levelled=True, options={"mode": "autonomous"}))
register(Rule("zil-euler", zil_euler, "Z-IL as Euler on the ODEs: dt = tau_x, Z-IL's gates, 200 steps (exact)",
              exact=True, levelled=True, accepts=frozenset({"steps", "backend", "leaky"})))
register(Rule("il", il, "IL: T inference steps from the feed-forward state, then one update (approximate)",
              inference=True, accepts=frozenset({"fixed_prediction", "output_precision", "compile"})))
register(Rule("ipc", ipc, "iPC: the weights move at every inference step, alongside the values (approximate)",
              inference=True, accepts=frozenset({"lr"}), additive=False))
register(Rule("bp", bp, "backprop over the traced graph (autograd)", exact=True))
