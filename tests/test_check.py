"""`pcsim.check`: a module's outputs as torch.export flattens them, the oracle autograd on the module."""

import pytest
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


def _two_heads_and_autograd():
    """The two-headed module, data, and autograd's gradients of its summed MSE (the oracle)."""
    module = _TwoHeads().double()
    x, y1, y2 = torch.randn(6, 4), torch.randn(6, 3), torch.randn(6, 3)
    out = module(x)
    loss = 0.5 * ((out["first"] - y1) ** 2).sum() + 0.5 * ((out["second"]["logits"] - y2) ** 2).sum()
    want = dict(zip([n for n, _ in module.named_parameters()],
                    torch.autograd.grad(loss, list(module.parameters())), strict=True))
    return module, x, y1, y2, want


def test_dict_outputs_are_checked_in_their_flattened_order():
    module, x, y1, y2, want = _two_heads_and_autograd()
    report = pcsim.check(module, (x,), (y1, y2), rule="zil")
    assert report.passed
    for n, g in want.items():
        assert relative_difference(report.grads[n], g) <= tolerance(torch.float64), n



def test_a_dict_of_targets_is_matched_by_key_whatever_its_order():
    """`{"second": .., "first": ..}` for outputs returned as `{"first": .., "second": ..}`: the targets were
    flattened in their own key order, for the rule and the oracle alike, so check passed on gradients 1.78
    relative off autograd's (each head learned from the other's target)."""
    module, x, y1, y2, want = _two_heads_and_autograd()
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


class _ScalesItsOwnSigmoid(nn.Module):
    """Doubles a sigmoid's output in place, as a recurrent cache or state buffer is updated in place (Hugging
    Face's RWKV with its default `use_cache`): sigmoid's backward reads that output, so autograd refuses."""

    def __init__(self, in_place: bool):
        super().__init__()
        torch.manual_seed(0)
        self.lin, self.out, self.in_place = nn.Linear(4, 5), nn.Linear(5, 2), in_place

    def forward(self, x):
        s = torch.sigmoid(self.lin(x))
        s = s.mul_(2.0) if self.in_place else s * 2.0
        return self.out(s)


def test_a_module_autograd_cannot_differentiate_is_an_oracle_error_not_torchs_stack():
    """check() ran the oracle's torch.autograd.grad unguarded: a RuntimeError from inside torch's engine ('one of
    the variables needed for gradient computation has been modified by an inplace operation'). It is an
    OracleError naming the module; pcsim's own rules differentiate the captured program: equal to autograd's
    gradient of the same function written out of place."""
    module = _ScalesItsOwnSigmoid(in_place=True).double()
    x, y = torch.randn(3, 4, dtype=torch.float64), torch.randn(3, 2, dtype=torch.float64)
    try:
        pcsim.check(module, (x,), y, rule="zil")
    except pcsim.OracleError as e:
        assert "_ScalesItsOwnSigmoid" in str(e) and "in place" in str(e)
    else:
        raise AssertionError("check() found an oracle where autograd has none")
    twin = _ScalesItsOwnSigmoid(in_place=False).double()
    twin.load_state_dict(module.state_dict())
    loss = 0.5 * ((twin(x) - y) ** 2).sum()
    want = dict(zip([n for n, _ in twin.named_parameters()], torch.autograd.grad(loss, list(twin.parameters())),
                    strict=True))
    graph = pcsim.trace(module, x)
    for rule in (pcsim.zil, pcsim.fa_zil):
        got = rule(graph, (x,), y)
        for n, w in want.items():
            assert relative_difference(got[n], w) <= tolerance(torch.float64), (rule.__name__, n)


class _CachesItsBias(nn.Module):
    """Keeps a function of a parameter from its first eval-mode call, as Hugging Face's LeViT keeps its
    attention biases (`attention_bias_cache`), and reads the kept tensor afterwards."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.lin, self.bias, self.cache = nn.Linear(4, 3), nn.Parameter(torch.randn(3)), {}

    def forward(self, x):
        if self.training:
            return torch.tanh(self.lin(x) + 2 * self.bias)
        if "bias" not in self.cache:
            self.cache["bias"] = 2 * self.bias
        return torch.tanh(self.lin(x) + self.cache["bias"])


def test_a_cache_of_parameters_kept_from_an_earlier_call_is_refused_by_name():
    """Run once in eval mode first (as anyone does to see an output's shape), the module reads a kept tensor with
    autograd history. trace took it for a constant: Z-IL's update of `bias` was zero where backprop's is not; and
    check() failed in copy.deepcopy ('Only Tensors created explicitly by the user (graph leaves) support the
    deepcopy protocol'). Both refuse now, naming the cache; an empty cache is exact."""
    module = _CachesItsBias().double().eval()
    x, y = torch.randn(5, 4, dtype=torch.float64), torch.randn(5, 3, dtype=torch.float64)
    module(x)
    for run in (lambda: pcsim.trace(module, x), lambda: pcsim.check(module, (x,), y, rule="zil")):
        try:
            run()
        except pcsim.TraceError as e:
            assert "_CachesItsBias.cache['bias']" in str(e) and "earlier call" in str(e)
        else:
            raise AssertionError("a kept tensor was taken for a constant")
    module.cache.clear()
    report = pcsim.check(module, (x,), y, rule="zil")
    assert report.passed and report.reference["bias"].abs().min() > 0, report.table()


class _Float32PositionEmbedding(nn.Module):
    """Interpolates its position embeddings in float32 whatever its own dtype, as Hugging Face's DINOv2 does."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.pos, self.lin = nn.Parameter(torch.randn(1, 3, 3, 3)), nn.Linear(3, 3)

    def forward(self, x):  # x: (B, 36, 3)
        pos = torch.nn.functional.interpolate(self.pos.to(torch.float32), size=(6, 6), mode="bicubic",
                                              align_corners=False).to(x.dtype)
        return torch.tanh(self.lin(x + pos.flatten(2).transpose(1, 2)))


def test_a_deviation_at_the_rounding_of_a_dtype_the_module_computes_in_is_explained():
    """DINOv2 in a float64 check FAILED at 1.5e-7 with no word of why: float32 rounding of its own interpolation
    (the captured bicubic kernel rounds otherwise than eager's). The tolerance stays float64's (Llama's RMSNorm casts
    to float32 too and agrees to 1e-16); the report names the coarser dtype the deviation is within."""
    module = _Float32PositionEmbedding().double()
    x, y = torch.randn(2, 36, 3, dtype=torch.float64), torch.randn(2, 36, 3, dtype=torch.float64)
    report = pcsim.check(module, (x,), y, rule="zil")
    assert report.tolerance == tolerance(torch.float64) and report.computed_in == torch.float32
    assert report.max_rel_diff <= tolerance(torch.float32)
    assert report.passed or "computes in float32 in places" in report.table()
    plain = pcsim.check(nn.Linear(3, 3).double(), (x,), y, rule="zil")
    assert plain.computed_in == torch.float64 and "computes in" not in plain.table()


class _LossInFloat32(nn.Module):
    """A Hugging Face model called with labels: its loss is computed from logits upcast to float32 (`.float()`),
    whatever dtype the model is in, next to the logits in the model's own."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.head = nn.Linear(4, 3)

    def forward(self, x, labels):
        logits = self.head(torch.tanh(x))
        return {"loss": nn.functional.cross_entropy(logits.float(), labels), "logits": logits}


def test_a_target_is_taken_in_its_outputs_dtype():
    """check cast every target to its dtype (float64), so an output computed in float32 could not be given one:
    a float32 target was refused as 'target for output ... has dtype torch.float64, the output is torch.float32'.
    The oracle is autograd on the module with the targets as given."""
    module = _LossInFloat32().double()
    x, labels = torch.randn(5, 4, dtype=torch.float64), torch.tensor([0, 2, 1, 1, 0])
    target = {"loss": torch.tensor(0.5), "logits": torch.randn(5, 3, dtype=torch.float64)}
    out = module(x, labels)
    loss = sum(0.5 * ((out[k] - target[k]) ** 2).sum() for k in target)
    want = dict(zip([n for n, _ in module.named_parameters()], torch.autograd.grad(loss, list(module.parameters())),
                    strict=True))
    report = pcsim.check(module, (x, labels), target, rule="zil")
    assert report.passed, report.table()
    for n, w in want.items():
        assert relative_difference(report.reference[n], w) <= tolerance(torch.float32), n


def test_a_dtype_given_by_name_is_taken_and_a_dtype_or_tol_that_cannot_be_is_refused():
    """check(dtype='float64') (the CLI's spelling) stopped in nn.Module.to with torch's 'Invalid device string:
    float64', an integer dtype with torch's own refusal; a negative or NaN `tol` failed every check silently,
    however close the update. The oracle: autograd on the module, float64."""
    module, x, y1, y2, want = _two_heads_and_autograd()
    report = pcsim.check(module, (x,), (y1, y2), dtype="float64")
    assert report.dtype == torch.float64 and report.passed
    for n, g in want.items():
        assert relative_difference(report.grads[n], g) <= tolerance(torch.float64), n
    for dtype in ("float8", torch.int32, torch.complex128):
        with pytest.raises(ValueError, match=r"dtype must be a floating dtype, one of torch.float64, .* got"):
            pcsim.check(module, (x,), (y1, y2), dtype=dtype)
    for tol in (-1e-12, float("nan")):
        with pytest.raises(ValueError, match=r"tol \(the relative tolerance\) must be >= 0 and finite"):
            pcsim.check(module, (x,), (y1, y2), tol=tol)
    assert tolerance("float32") == tolerance(torch.float32)


class _RunningMean(nn.Module):
    """Keeps a running mean of its hidden layer in a buffer it assigns anew at every call (an EMA teacher's
    statistics), and adds it to its output."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 3)
        self.register_buffer("mean", torch.full((3,), 0.5))

    def forward(self, x):
        h = torch.tanh(self.lin(x))
        self.mean = 0.9 * self.mean + 0.1 * h.detach().mean(0)
        return h * self.mean


@pytest.mark.parametrize("rule", ["zil", "fa-zil-wavefront", "fa-zil-autonomous"])
def test_a_module_that_assigns_a_buffer_in_forward_is_checked(rule):
    # check ran its oracle on the copy it had traced: the oracle's call assigned the buffer anew, and the rule then
    # refused the graph ('buffer mean was replaced by another tensor since the trace'; trace again)
    torch.manual_seed(0)
    module = _RunningMean().double()
    x, y = torch.randn(4, 3, dtype=torch.float64), torch.randn(4, 3, dtype=torch.float64)
    oracle = _RunningMean().double()
    oracle.load_state_dict(module.state_dict())
    loss = 0.5 * ((oracle(x) - y) ** 2).sum()
    want = dict(zip([n for n, _ in oracle.named_parameters()], torch.autograd.grad(loss, list(oracle.parameters())),
                    strict=True))
    report = pcsim.check(module, (x,), y, rule=rule)
    assert report.passed and report.max_rel_diff <= tolerance(torch.float64), report.table()
    for n, g in want.items():
        assert relative_difference(report.grads[n], g) <= tolerance(torch.float64)


def _rotate_half(x):
    a, b = x.chunk(2, -1)
    return torch.cat((-b, a), -1)


class _Rotary(nn.Module):
    """Keeps the function it applies as an attribute wrapped in staticmethod, as rotary-embedding-torch does."""

    def __init__(self):
        super().__init__()
        self.q = nn.Linear(4, 4)
        self.rotate = staticmethod(_rotate_half)

    def forward(self, x):
        return torch.tanh(self.rotate(self.q(x)))


def test_a_function_kept_as_a_staticmethod_attribute_is_shared_by_checks_copy():
    # copy.deepcopy refuses staticmethod objects: check stopped in copy.py with "cannot pickle 'staticmethod' object"
    torch.manual_seed(0)
    module = _Rotary().double()
    x, y = torch.randn(3, 4, dtype=torch.float64), torch.randn(3, 4, dtype=torch.float64)
    loss = 0.5 * ((module(x) - y) ** 2).sum()
    want = dict(zip([n for n, _ in module.named_parameters()], torch.autograd.grad(loss, list(module.parameters())),
                    strict=True))
    for rule in ("zil", "fa-zil-wavefront", "fa-zil-autonomous"):
        report = pcsim.check(module, (x,), y, rule=rule)
        assert report.passed and report.max_rel_diff <= tolerance(torch.float64), report.table()
        for n, g in want.items():
            assert relative_difference(report.grads[n], g) <= tolerance(torch.float64)


def test_a_module_that_cannot_be_copied_is_refused_naming_the_attribute():
    import threading

    torch.manual_seed(0)
    module = _Rotary().double()
    module.q.guard = threading.Lock()
    x, y = torch.randn(3, 4, dtype=torch.float64), torch.randn(3, 4, dtype=torch.float64)
    with pytest.raises(pcsim.InputError, match=r"_Rotary\.q\.guard cannot be copied"):
        pcsim.check(module, (x,), y)


def test_a_report_table_headed_by_something_other_than_a_name_is_refused():
    # before: table(5) stopped in the string concatenation with Python's TypeError
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 2), nn.Tanh()).double()
    report = pcsim.check(net, (torch.randn(2, 3, dtype=torch.float64),), torch.randn(2, 2, dtype=torch.float64))
    with pytest.raises(TypeError, match=r"table\(\) takes the model's name to head the table, a string; got 5"):
        report.table(5)
    assert report.table("tiny").startswith("tiny: rule zil") and report.passed


class _Skip(nn.Module):
    """A skip edge over two layers: Z-IL on the graph as traced (unlevelled) is not exact on it."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(1)
        self.a, self.b, self.c = nn.Linear(4, 5), nn.Linear(5, 5), nn.Linear(5, 3)

    def forward(self, x):
        h = torch.tanh(self.a(x))
        return self.c(torch.tanh(self.b(h)) + h)


def test_check_rules_runs_each_rule_with_its_settings_on_one_capture_against_autograd():
    module = _Skip().double()
    x, y = torch.randn(6, 4), torch.randn(6, 3)
    loss = 0.5 * ((module(x) - y) ** 2).sum()
    want = dict(zip([n for n, _ in module.named_parameters()], torch.autograd.grad(loss, list(module.parameters())),
                    strict=True))
    rules = ["zil", "fa-zil-wavefront", ("zil", {"level": False}), ("il", {"steps": 3, "gamma": 0.5})]
    reports = pcsim.check_rules(module, (x,), y, rules)
    assert [r.rule for r in reports] == ["zil", "fa-zil-wavefront", "zil", "il"]
    assert len({id(r.graph) for r in reports}) == 1  # one capture
    graph = pcsim.trace(module, x)
    il = pcsim.il(graph, (x,), y, steps=3, gamma=0.5)  # the settings reached the rule
    for report, exact in zip(reports, (True, True, False, False), strict=True):
        assert report.passed is exact, report.table()
        for n, g in want.items():  # each report against autograd, computed here
            assert relative_difference(report.reference[n], g) <= tolerance(torch.float64)
            rel = relative_difference(report.grads[n], g)
            assert (rel <= tolerance(torch.float64)) if exact else True, (report.rule, n, rel)
    assert reports[2].identity_vertices == 0 < reports[0].identity_vertices  # levelled, then as traced
    assert reports[2].max_rel_diff > 1e-3
    for n, g in il.items():
        assert torch.equal(reports[3].grads[n], g), n


@pytest.mark.parametrize("rules", ["zil", [], [3], [("zil",)], [("zil", "level")], ("zil", {"level": False})])
def test_check_rules_refuses_what_is_not_a_list_of_rules_before_any_work(rules):
    with pytest.raises(TypeError, match=r"rules must be a non-empty list whose items are a rule name or a \(name, "):
        pcsim.check_rules(_Skip().double(), (torch.randn(2, 4),), torch.randn(2, 3), rules)


def test_check_rules_refuses_an_unknown_rule_by_name():
    with pytest.raises(ValueError, match=r"unknown rule 'zl'"):
        pcsim.check_rules(_Skip().double(), (torch.randn(2, 4),), torch.randn(2, 3), ["zil", "zl"])
