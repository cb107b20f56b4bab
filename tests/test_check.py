"""`pcsim.check`: a module's outputs as torch.export flattens them, the oracle autograd on the module."""

import torch
from torch import nn

import pcsim
from pcsim.numerics import relative_difference, tolerance


class _TwoHeads(nn.Module):
    """Returns a dict (as a Hugging Face ModelOutput does), its two entries of one shape, so a swap would pass
    shape checks and give other gradients."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.body, self.first, self.second = nn.Linear(4, 5), nn.Linear(5, 3), nn.Linear(5, 3)

    def forward(self, x):
        h = torch.tanh(self.body(x))
        return {"first": self.first(h), "second": {"logits": self.second(h), "none": None}}


def test_dict_outputs_are_checked_in_their_flattened_order():
    module = _TwoHeads().double()
    x, y1, y2 = torch.randn(6, 4), torch.randn(6, 3), torch.randn(6, 3)
    out = module(x)
    loss = 0.5 * ((out["first"] - y1) ** 2).sum() + 0.5 * ((out["second"]["logits"] - y2) ** 2).sum()
    want = dict(zip([n for n, _ in module.named_parameters()],
                    torch.autograd.grad(loss, list(module.parameters())), strict=True))
    report = pcsim.check(module, (x,), (y1, y2), rule="zil")
    assert report.passed
    for n, g in want.items():
        assert relative_difference(report.grads[n], g) <= tolerance(torch.float64), n
