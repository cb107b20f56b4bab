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



def test_a_dict_of_targets_is_matched_by_key_whatever_its_order():
    """`{"second": .., "first": ..}` for outputs returned as `{"first": .., "second": ..}`: the targets were
    flattened in their own key order, for the rule and the oracle alike, so check passed on gradients 1.78
    relative off autograd's (each head learned from the other's target)."""
    module = _TwoHeads().double()
    x, y1, y2 = torch.randn(6, 4), torch.randn(6, 3), torch.randn(6, 3)
    out = module(x)
    loss = 0.5 * ((out["first"] - y1) ** 2).sum() + 0.5 * ((out["second"]["logits"] - y2) ** 2).sum()
    want = dict(zip([n for n, _ in module.named_parameters()],
                    torch.autograd.grad(loss, list(module.parameters())), strict=True))
    report = pcsim.check(module, (x,), {"second": {"none": None, "logits": y2}, "first": y1}, rule="zil")
    for n, g in want.items():
        assert relative_difference(report.grads[n], g) <= tolerance(torch.float64), n
        assert relative_difference(report.reference[n], g) <= tolerance(torch.float64), n


class _LSTMWithState(nn.Module):
    """Returns `nn.LSTM`'s `(output, (h_n, c_n))` as it is: three outputs, nested."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.lstm = nn.LSTM(3, 4, batch_first=True)

    def forward(self, x):
        return self.lstm(x)


def _mse_grads(module: nn.Module, outputs, targets) -> dict[str, torch.Tensor]:
    loss = sum(0.5 * ((o - y) ** 2).sum() for o, y in zip(outputs, targets, strict=True))
    return dict(zip([n for n, _ in module.named_parameters()], torch.autograd.grad(loss, list(module.parameters())),
                    strict=True))


def test_a_target_nested_as_the_outputs_are_is_matched_output_by_output():
    """A target given in the module's own output structure (`(y, (h, c))`, a dict with a None) is flattened as
    the outputs are; it crashed ('tuple' object has no attribute 'is_floating_point') before."""
    torch.manual_seed(1)
    lstm, x = _LSTMWithState().double(), torch.randn(2, 5, 3, dtype=torch.float64)
    y, h, c = torch.randn(2, 5, 4), torch.randn(1, 2, 4), torch.randn(1, 2, 4)
    out, (h_n, c_n) = lstm(x)
    want = _mse_grads(lstm, (out, h_n, c_n), (y, h, c))
    heads = _TwoHeads().double()
    y1, y2 = torch.randn(6, 3), torch.randn(6, 3)
    z = torch.randn(6, 4, dtype=torch.float64)
    out = heads(z)
    want_heads = _mse_grads(heads, (out["first"], out["second"]["logits"]), (y1, y2))
    for module, inputs, target, grads in ((lstm, (x,), (y, (h, c)), want),
                                          (heads, (z,), {"first": y1, "second": {"logits": y2, "none": None}},
                                           want_heads)):
        for rule in ("zil", "fa-zil", "fa-zil-autonomous"):
            report = pcsim.check(module, inputs, target, rule=rule)
            assert report.passed, report.table()
            for n, g in grads.items():
                assert relative_difference(report.grads[n], g) <= tolerance(torch.float64), (rule, n)


class _SparseEmbedding(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.emb, self.head = nn.Embedding(10, 4, sparse=True), nn.Linear(4, 2)

    def forward(self, ids):
        return self.head(torch.tanh(self.emb(ids))) + self.head(self.emb(ids[:, :1]))


def test_a_sparse_embeddings_gradient_is_compared_and_returned_dense():
    """`nn.Embedding(sparse=True)`: autograd's gradient and the embedding's Hebbian term are sparse tensors. The
    comparison stopped at `linalg_vector_norm` on SparseCPU, and IL's in-place accumulation at `contiguous`;
    every rule returns the dense update now, equal to autograd's gradient made dense."""
    module = _SparseEmbedding().double()
    ids, y = torch.tensor([[1, 2, 3], [3, 4, 1]]), torch.randn(2, 3, 2, dtype=torch.float64)
    want = torch.autograd.grad(0.5 * ((module(ids) - y) ** 2).sum(), module.emb.weight)[0]
    assert want.is_sparse
    for rule in ("zil", "fa-zil", "fa-zil-autonomous", "bp"):
        report = pcsim.check(module, (ids,), y, rule=rule)
        assert report.passed, report.table()
        got = report.grads["emb.weight"]
        assert not got.is_sparse and relative_difference(got, want.to_dense()) <= tolerance(torch.float64)
    assert not pcsim.il(pcsim.trace(module, ids), (ids,), y, steps=2)["emb.weight"].is_sparse


def test_a_loss_instance_is_taken_as_the_rules_take_it():
    """`loss=MSE()` (a pcsim Loss, which every rule takes) stopped check's oracle with 'loss must be a tensor or a
    tuple of tensors, got MSE'; a tuple of instances was named by their reprs in the report."""
    from pcsim.algorithms import MSE, CrossEntropy
    torch.manual_seed(0)
    module = _TwoHeads().double()
    x, y1, classes = torch.randn(6, 4), torch.randn(6, 3), torch.tensor([0, 2, 1, 1, 0, 2])
    out = module(x)
    loss = 0.5 * ((out["first"] - y1) ** 2).sum() + torch.nn.functional.cross_entropy(
        out["second"]["logits"], classes, reduction="sum")
    want = dict(zip([n for n, _ in module.named_parameters()],
                    torch.autograd.grad(loss, list(module.parameters())), strict=True))
    report = pcsim.check(module, (x,), (y1, classes), loss=(MSE(), CrossEntropy()))
    assert report.loss == "mse,ce"
    for n, g in want.items():
        assert relative_difference(report.grads[n], g) <= tolerance(torch.float64), n
    assert pcsim.check(module, (x,), (y1, torch.randn(6, 3)), loss=MSE()).loss == "mse"


class _DoublesItsInput(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.lin = nn.Linear(4, 3)

    def forward(self, x):
        x.mul_(2)  # in place, on the caller's tensor
        return self.lin(torch.relu_(x))


def test_check_leaves_an_input_its_module_changes_in_place_as_it_was():
    """The oracle ran the module on the caller's own tensors: a forward doubling its input in place changed the
    caller's x, and the rule then ran on the doubled x, so check failed (2.2 relative) on an exact rule."""
    module = _DoublesItsInput().double()
    x, y = torch.randn(6, 4, dtype=torch.float64), torch.randn(6, 3, dtype=torch.float64)
    before = x.clone()
    loss = 0.5 * ((module(x.clone()) - y) ** 2).sum()
    want = dict(zip([n for n, _ in module.named_parameters()],
                    torch.autograd.grad(loss, list(module.parameters())), strict=True))
    report = pcsim.check(module, (x,), y)
    assert torch.equal(x, before)
    for n, g in want.items():
        assert relative_difference(report.grads[n], g) <= tolerance(torch.float64), n
        assert relative_difference(report.reference[n], g) <= tolerance(torch.float64), n
