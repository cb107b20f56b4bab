"""Gradients for a batch under each learning rule, in autograd's sign, keyed by parameter name."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

import pcsim
from pcsim.check import autograd_gradients
from pcsim.rules import RULES, get

RULE_NAMES = tuple(RULES)  # "bp": autograd on the module itself; the others run on its traced graph
EXACT_RULES = tuple(n for n, r in RULES.items() if r.exact and n != "bp")
COMPILED_RULES = tuple(n for n, r in RULES.items() if "compile" in r.accepts)  # what `compile=True` applies to


@dataclass
class RuleGradients:
    """Computes one rule's gradients for a module; traced graphs are cached per input shape."""

    rule: str
    module: nn.Module
    loss: str
    settings: dict = field(default_factory=dict)  # fixed_prediction, output_precision, compile: where accepted
    inference: dict = field(default_factory=dict)  # gamma, steps: for every rule that relaxes the values
    fused: bool = False  # trace nn.RNN/LSTM/GRU as one vertex per call (torch's fused kernel)
    _graphs: dict = field(default_factory=dict)

    def graph(self, x: torch.Tensor):
        key = (tuple(x.shape), x.dtype)
        if key not in self._graphs:  # the graph is specialised to shapes: one per batch shape
            self._graphs[key] = pcsim.trace(self.module, x, fused=self.fused)
        return self._graphs[key]

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.rule == "bp":
            return autograd_gradients(self.module, (x,), y, self.loss)
        rule = get(self.rule)
        options = {k: v for k, v in self.settings.items() if k in rule.accepts}
        return rule(self.graph(x), (x,), y, self.loss, **options, **(self.inference if rule.inference else {}))
