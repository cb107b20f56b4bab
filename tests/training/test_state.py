"""Training moves a module's buffers as a plain torch loop does: one train-mode forward per step, and the
test split scored in eval mode. Oracle: the same module trained by a hand-written torch SGD loop."""

import copy
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from pcsim.numerics import tolerance
from pcsim.training import Dataset, TrainConfig, build_run, train


class Stateful(nn.Module):
    """BatchNorm (running statistics), spectral norm (power-iteration vectors that change the next
    forward's weight) and dropout (the identity in every rule, off at evaluation)."""

    def __init__(self):
        super().__init__()
        self.inp = nn.utils.parametrizations.spectral_norm(nn.Linear(4, 6))
        self.norm = nn.BatchNorm1d(6)
        self.drop = nn.Dropout(0.5)
        self.out = nn.Linear(6, 3)

    def forward(self, x):
        return self.out(self.drop(torch.tanh(self.norm(self.inp(x)))))


def _data():
    g = torch.Generator().manual_seed(1)
    return Dataset("toy", torch.randn(24, 4, generator=g), torch.randint(0, 3, (24,), generator=g),
                   torch.randn(8, 4, generator=g), torch.randint(0, 3, (8,), generator=g), 3)


def _torch_loop(module, data, epochs, batch, lr, seed):
    """What a researcher writes: one forward, backward and SGD step per batch; eval mode for the test split."""
    opt = torch.optim.SGD(module.parameters(), lr=lr, momentum=0.9)
    gen = torch.Generator().manual_seed(seed)
    module.drop.p = 0.0  # pcsim runs dropout as the identity
    for _ in range(epochs):
        order = torch.randperm(len(data.x_train), generator=gen)
        for i in range(0, len(order), batch):
            idx = order[i:i + batch]
            loss = F.cross_entropy(module(data.x_train[idx].double()), data.y_train[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    module.eval()
    with torch.no_grad():
        return F.cross_entropy(module(data.x_test.double()), data.y_test).item()


@pytest.mark.filterwarnings("ignore:op native_dropout")
@pytest.mark.parametrize("rule,check_every", [("zil", 0), ("fa-zil", 1), ("bp", 0), ("bp", 1)])
def test_buffers_and_test_loss_follow_a_plain_torch_loop(rule, check_every):
    torch.manual_seed(0)
    start, data = Stateful().double(), _data()
    reference = copy.deepcopy(start)
    test_loss = _torch_loop(reference, data, epochs=2, batch=5, lr=0.1, seed=3)
    config = TrainConfig(model="stateful", rule=rule, epochs=2, batch_size=5, lr=0.1, dtype="float64", seed=3,
                         check_every=check_every)
    run = build_run(config, data, module=copy.deepcopy(start), loss="ce")
    history = train(run, progress=False)
    got, want = run.module.state_dict(), reference.state_dict()
    for name, ref in want.items():
        if ref.is_floating_point():
            rel = float((got[name] - ref).norm() / ref.norm())
            assert rel <= tolerance(torch.float64), (name, rel)
    assert abs(history[-1]["test_loss"] - test_loss) <= tolerance(torch.float64) * test_loss
    assert run.module.training and run.module.drop.training  # the module's own mode, restored


class _Pair(torch.nn.Module):
    def forward(self, x):
        return x, x


@pytest.mark.parametrize("module, message", [
    # before: the first step stopped in the loss with torch's 'The size of tensor a (4) must match the size of
    # tensor b (3) at non-singleton dimension 1', which the CLI blamed on the model
    (torch.nn.Linear(4, 4), r"gives shape \(2, 4\) \(float64\) for 2 samples of mine; training with loss 'mse' "
                            r"needs one score per class, a floating tensor of shape \(2, 3\) \(3 classes\)"),
    (_Pair(), r"gives a tuple for 2 samples of mine"),
    (torch.nn.Linear(5, 3), r"cannot run on mine's samples of shape \(4,\): RuntimeError: mat1 and mat2"),
])
def test_a_module_that_does_not_score_the_classes_is_refused_before_training(module, message):
    x, y = torch.rand(6, 4), torch.tensor([0, 1, 2, 0, 1, 2])
    with pytest.raises(ValueError, match=message):
        build_run(TrainConfig(model="mine", dtype="float64"), Dataset("mine", x, y, x, y, 3), module=module)


def test_the_check_before_training_leaves_buffers_and_rng_as_they_were():
    x, y = torch.rand(6, 4), torch.tensor([0, 1, 2, 0, 1, 2])
    module = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3), torch.nn.Dropout(0.5))
    state = torch.get_rng_state()
    build_run(TrainConfig(model="mine", dtype="float64"), Dataset("mine", x, y, x, y, 3), module=module)
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(module[1].running_mean, torch.zeros(3)) and int(module[1].num_batches_tracked) == 0


@pytest.mark.filterwarnings("ignore:op native_dropout")
@pytest.mark.parametrize("rule", ["bp", "zil"])
def test_the_train_loss_of_a_dropout_model_is_that_of_the_function_the_rules_differentiate(rule):
    # before: each batch was scored with train-mode dropout, drawn from the global RNG, while the gradients were
    # the identity's: 1.297 and 1.108 logged by two identical runs under two global seeds, the torch loop 1.075
    data, start = _data(), Stateful().double()
    config = TrainConfig(model="stateful", rule=rule, epochs=1, batch_size=5, lr=0.1, dtype="float64", seed=3)
    rows = []
    for global_seed in (0, 1):
        torch.manual_seed(global_seed)
        rows.append(train(build_run(config, data, module=copy.deepcopy(start), loss="ce"), progress=False)[0])
    module = copy.deepcopy(start)
    module.drop.p = 0.0  # pcsim runs dropout as the identity
    opt = torch.optim.SGD(module.parameters(), lr=0.1, momentum=0.9)
    order = torch.randperm(len(data.x_train), generator=torch.Generator().manual_seed(3))
    summed, correct = 0.0, 0
    for i in range(0, len(order), 5):
        idx = order[i:i + 5]
        out = module(data.x_train[idx].double())
        loss = F.cross_entropy(out, data.y_train[idx], reduction="sum")
        summed, correct = summed + loss.item(), correct + int((out.argmax(1) == data.y_train[idx]).sum())
        opt.zero_grad()
        (loss / len(idx)).backward()
        opt.step()
    for row in rows:
        assert abs(row["train_loss"] - summed / len(order)) <= tolerance(torch.float64) * summed / len(order)
        assert row["train_acc"] == correct / len(order)


@pytest.mark.parametrize("rule", ["bp", "zil"])
def test_a_last_batch_the_module_cannot_train_on_is_refused_before_the_first_step(rule):
    # before: 13 samples in batches of 4 trained a whole epoch, then the last batch (1 sample) stopped the run with
    # torch's 'Expected more than 1 value per channel when training', raised from inside F.batch_norm
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(13, 4, generator=g, dtype=torch.float64), torch.randint(0, 3, (13,), generator=g)
    module = nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.Tanh(), nn.Linear(6, 3)).double()
    with pytest.raises(ValueError, match="Expected more than 1 value"):  # the oracle: torch refuses the batch
        copy.deepcopy(module)(x[:1])
    start = copy.deepcopy(module.state_dict())
    run = build_run(TrainConfig(model="bn", rule=rule, epochs=1, batch_size=4, dtype="float64"),
                    Dataset("toy", x, y, x, y, 3), module=module, loss="ce")
    with pytest.raises(ValueError, match=r"bn cannot train on a batch of 1 sample of toy, the last batch of each "
                                         r"epoch \(13 training samples in batches of 4 leave 1\): ValueError: "
                                         r"Expected more than 1 value per channel"):
        train(run, progress=False)
    assert all(torch.equal(v, start[k]) for k, v in module.state_dict().items())  # no step was taken


def test_a_module_handed_over_in_eval_mode_whose_buffers_training_would_move_is_warned_about():
    # before: a BatchNorm model left in eval mode (after an evaluation, or as a loaded model comes) trained in eval
    # mode, with its running statistics in place of the batch's, silently: 1.26 relative off a torch loop that calls
    # model.train() after 2 epochs
    data, start = _data(), nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.Tanh(), nn.Linear(6, 3)).double()
    with torch.no_grad():  # the oracle: torch's own forward differs between the modes, and moves the statistics
        x, trained = data.x_train[:2].double(), copy.deepcopy(start).train()
        assert not torch.equal(trained(x), copy.deepcopy(start).eval()(x))
        assert int(trained[1].num_batches_tracked) == 1
    config = TrainConfig(model="bn", rule="zil", epochs=1, batch_size=5, dtype="float64")
    with pytest.warns(UserWarning, match=r"bn is in eval mode, and a train-mode forward would move its buffers "
                                         r"\(1.running_mean, 1.running_var, 1.num_batches_tracked: .* call "
                                         r"module.train\(\) first unless eval mode is meant"):
        run = build_run(config, data, module=copy.deepcopy(start).eval(), loss="ce")
    assert not run.module.training and not run.module[1].training  # trained as given
    assert int(run.module[1].num_batches_tracked) == 0
    quiet = [copy.deepcopy(start),  # in train mode
             nn.Sequential(nn.Linear(4, 6), nn.Dropout(0.5), nn.Linear(6, 3)).double().eval()]  # the same either way
    for module in quiet:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            build_run(config, data, module=module, loss="ce")


def test_bp_training_of_a_model_that_would_drop_says_it_runs_dropout_as_the_identity():
    # before: the traced rules warned (the trace does) but bp, autograd on the module, trained without dropout silently
    data = _data()
    config = TrainConfig(model="drop", rule="bp", epochs=1, batch_size=5, dtype="float64")
    dropping = nn.Sequential(nn.Linear(4, 6), nn.Dropout(0.5), nn.Linear(6, 3)).double()
    with pytest.warns(UserWarning, match=r"drop calls dropout 1 time\(s\) in train mode: rule bp, as every pcsim rule, "
                                         r"runs dropout as the identity"):
        train(build_run(config, data, module=dropping, loss="ce"), progress=False)
    for quiet in (copy.deepcopy(dropping).eval(), nn.Sequential(nn.Linear(4, 3), nn.Dropout(0.0)).double()):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            train(build_run(config, data, module=quiet, loss="ce"), progress=False)
