"""Training with Z-IL and Fa-Z-IL follows BP training exactly; IL tracks it; runs are resumable."""

import copy
import dataclasses
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import pcsim
from pcsim.training import (
    CheckpointError,
    Dataset,
    TrainConfig,
    TrainingError,
    build_run,
    load_checkpoint,
    resume,
    train,
)
from pcsim.training.checkpoint import save_checkpoint
from pcsim.training.data import load_dataset

MODEL = str(Path(__file__).with_name("small_mlp.py"))


@pytest.fixture(scope="module")
def digits64():
    return load_dataset("digits", seed=0).to(torch.float64)


def _final(config, data):
    run = build_run(config, data)
    history = train(run, progress=False)
    return {n: p.detach().clone() for n, p in run.module.named_parameters()}, history


@pytest.mark.slow
@pytest.mark.parametrize("optimizer,lr", [("sgd", 0.05), ("adam", 0.003)])
def test_exact_rules_train_exactly_like_bp(digits64, optimizer, lr):
    base = TrainConfig(model=MODEL, rule="bp", epochs=5, batch_size=64, lr=lr, optimizer=optimizer, dtype="float64")
    bp_params, bp_history = _final(base, digits64)
    for rule in ("zil", "fa-zil"):
        params, history = _final(dataclasses.replace(base, rule=rule), digits64)
        for name, ref in bp_params.items():
            rel = float((params[name] - ref).norm() / ref.norm())
            assert rel <= 1e-10, (rule, name, rel)
        assert [r["test_acc"] for r in history] == [r["test_acc"] for r in bp_history]
    assert bp_history[-1]["test_acc"] > 0.85  # it learned something


def _assert_bit_identical(a_module, b_module):
    for (name, a), (_, b) in zip(a_module.named_parameters(), b_module.named_parameters(), strict=True):
        assert torch.equal(a, b), name


def test_resume_is_bit_identical(digits64, tmp_path):
    config = TrainConfig(model=MODEL, rule="fa-zil", epochs=2, batch_size=100, lr=0.05, dtype="float64",
                         checkpoint_every=7)
    straight = build_run(config, digits64)
    train(straight, progress=False)

    interrupted = build_run(config, digits64)

    class Stop(Exception):
        pass

    def stop_after_first_epoch(row):
        raise Stop

    with pytest.raises(Stop):
        train(interrupted, out=tmp_path, progress=False, on_epoch=stop_after_first_epoch)
    state = load_checkpoint(tmp_path / "checkpoint.pt")
    assert state["epoch"] == 1 or state["step"] % 7 == 0
    resumed = resume(tmp_path, digits64)
    train(resumed, out=tmp_path, progress=False)
    _assert_bit_identical(straight.module, resumed.module)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert [r["test_acc"] for r in metrics["epochs"]] == [r["test_acc"] for r in straight.history]
    torch.load(tmp_path / "model.pt", weights_only=True)


def test_resume_mid_epoch_from_a_periodic_checkpoint(digits64, tmp_path):
    config = TrainConfig(model=MODEL, rule="zil", epochs=1, batch_size=100, lr=0.05, dtype="float64",
                         checkpoint_every=5)
    straight = build_run(config, digits64)
    train(straight, progress=False)
    partial = build_run(config, digits64)
    original = save_checkpoint

    calls = []

    def crash_on_second(state, path):  # the run dies right after its second checkpoint
        original(state, path)
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt

    import pcsim.training.loop as loop

    loop.save_checkpoint, saved = crash_on_second, loop.save_checkpoint
    try:
        with pytest.raises(KeyboardInterrupt):
            train(partial, out=tmp_path, progress=False)
    finally:
        loop.save_checkpoint = saved
    assert load_checkpoint(tmp_path / "checkpoint.pt")["step"] == 10
    resumed = resume(tmp_path, digits64)
    train(resumed, out=tmp_path, progress=False)
    _assert_bit_identical(straight.module, resumed.module)


WRITER = """
import sys, torch
from pcsim.training.checkpoint import save_checkpoint
big = torch.randn(4_000_000, dtype=torch.float64)
i = 0
while True:
    save_checkpoint({"step": i, "blob": big}, sys.argv[1])
    i += 1
    print(i, flush=True)
"""


def test_sigkill_during_a_write_leaves_the_previous_checkpoint_loadable(tmp_path):
    path = tmp_path / "checkpoint.pt"
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "1"  # one complete checkpoint exists
        time.sleep(0.15)  # now it is most likely in the middle of another write
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        proc.kill()
    state = load_checkpoint(path)
    assert state["step"] >= 0 and state["blob"].shape == (4_000_000,)


def test_corrupted_and_foreign_checkpoints_give_clear_errors(tmp_path):
    (tmp_path / "checkpoint.pt").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="not a readable pcsim checkpoint") as info:
        load_checkpoint(tmp_path / "checkpoint.pt")
    # before: torch's advice to load it with weights_only=False, which runs whatever code the file holds
    assert "weights_only" not in str(info.value) and "Unsupported operand" in str(info.value)
    torch.save({"weights": torch.zeros(2)}, tmp_path / "foreign.pt")
    with pytest.raises(CheckpointError, match="not a pcsim checkpoint"):
        load_checkpoint(tmp_path / "foreign.pt")
    with pytest.raises(CheckpointError, match="no checkpoint"):
        load_checkpoint(tmp_path / "missing.pt")


def test_check_every_stops_an_exact_rule_that_deviates(digits64, monkeypatch):
    config = TrainConfig(model=MODEL, rule="zil", epochs=1, batch_size=200, dtype="float64", check_every=2)
    run = build_run(config, digits64)
    from pcsim.rules import RULES

    broken = dataclasses.replace(RULES["zil"], options={"gamma": 0.99999})  # a broken schedule, registered as zil
    monkeypatch.setitem(RULES, "zil", broken)
    with pytest.raises(TrainingError, match="deviates from autograd"):
        train(run, progress=False)


def test_il_logs_its_deviation_and_the_angle_falls_with_steps(digits64):
    """With fixed prediction IL converges to BP's gradient as T grows (strict IL at output precision 1
    converges to a damped equilibrium instead, so its angle need not fall)."""
    angles = []
    for steps in (2, 10, 50):
        config = TrainConfig(model=MODEL, rule="il", epochs=1, batch_size=400, dtype="float64", check_every=1,
                             il_steps=steps, il_gamma=0.1, il_fixed_prediction=True)
        history = train(build_run(config, digits64), progress=False)
        assert history[-1]["max_deviation"] > 1e-6  # IL is not exact, and it is not fatal
        angles.append(history[-1]["mean_angle_deg"])
    assert angles[0] > angles[1] > angles[2], angles


def test_ipc_is_a_registered_rule_that_trains(digits64):
    """iPC reaches training through the rule registry, with IL's inference settings: not exact (its deviation
    is logged, not fatal), and it learns."""
    config = TrainConfig(model=MODEL, rule="ipc", epochs=4, batch_size=64, lr=0.05, dtype="float64", check_every=5,
                         il_steps=10, il_gamma=0.2)
    history = train(build_run(config, digits64), progress=False)
    assert history[-1]["max_deviation"] > 1e-6
    assert history[-1]["train_loss"] < 0.8 * history[0]["train_loss"], [h["train_loss"] for h in history]


def test_an_ipc_batch_lands_where_ipc_leaves_the_weights():
    """iPC's weights move at each of its T inference steps at the rate lr / T on the batch-mean loss, so one SGD step
    of lr on its estimate puts them where its inference left them. Oracle: iPC in plain torch from its equations
    (tests/algorithms/plain_pc.py). Before, training ran iPC at its default 1e-3 on the summed loss, whatever the
    --lr and batch (on the zoo mlp at batch 64 that climbed the energy, 147 -> 613), and the trained weights were
    1.1e-3 relative off the oracle's here."""
    from pcsim.numerics import relative_difference, tolerance
    from pcsim.training.data import Dataset
    from tests.algorithms import plain_pc

    torch.manual_seed(0)
    seq = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.Tanh(), torch.nn.Linear(6, 3))
    x, y = torch.randn(8, 4), torch.randint(0, 3, (8,))
    data = Dataset("mine", x, y, x, y, 3)
    lr, steps = 0.5, 5
    start = copy.deepcopy(seq)
    config = TrainConfig(rule="ipc", epochs=1, batch_size=8, lr=lr, momentum=0.0, dtype="float64", il_steps=steps,
                         il_gamma=0.2)
    run = build_run(config, data, module=seq, loss="ce")
    train(run, progress=False)
    rate = lr / (len(x) * steps)  # per inference step, on the summed loss plain_pc descends
    mean, _, _ = plain_pc.il(start, x, y, "ce", gamma=0.2, steps=steps, lr=rate)  # the epoch's one batch
    for name, p in run.module.named_parameters():
        expected = dict(start.named_parameters())[name].detach() - rate * steps * mean[name]
        assert relative_difference(p.detach(), expected) <= tolerance(torch.float64), name


def test_ipc_diverging_in_training_names_the_training_lr():
    """iPC's own message names its per-step rate, lr / (batch x T): at --lr 20 on a batch of 8 and 5 steps it said
    'iPC diverged at lr = 0.5', a number the user never set. Training adds the learning rate it came from. Oracle:
    plain_pc's iPC at that per-step rate climbs the energy while its values alone (IL) descend it."""
    from pcsim.training.data import Dataset
    from tests.algorithms import plain_pc

    torch.manual_seed(0)
    seq = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.Tanh(), torch.nn.Linear(6, 3))
    x, y = torch.randn(8, 4), torch.randint(0, 3, (8,))
    lr, steps = 20.0, 5
    _, f0, f_ipc = plain_pc.il(seq, x, y, "ce", gamma=0.2, steps=steps, lr=lr / (len(x) * steps))
    _, _, f_il = plain_pc.il(seq, x, y, "ce", gamma=0.2, steps=steps)
    assert f_ipc > f0 > f_il
    config = TrainConfig(rule="ipc", epochs=1, batch_size=8, lr=lr, momentum=0.0, dtype="float64", il_steps=steps,
                         il_gamma=0.2)
    run = build_run(config, Dataset("mine", x, y, x, y, 3), module=seq, loss="ce")
    with pytest.raises(pcsim.DivergenceError, match=r"iPC diverged at lr = 0.5 .* try a smaller lr\. Here iPC's lr "
                                                    r"is this step's learning rate 20 over the batch of 8 and the 5 "
                                                    r"inference steps: lower lr \(--lr\)$"):
        train(run, progress=False)


def test_your_own_module_with_integer_inputs_trains_exactly_like_bp():
    """build_run(config, data, module=, loss=): a module of your own, fed token ids (integers stay integers)."""

    class Tokens(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.embed, self.out = torch.nn.Embedding(10, 6), torch.nn.Linear(6, 3)

        def forward(self, ids):
            return self.out(torch.tanh(self.embed(ids)).mean(dim=1))

    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 10, (80, 4), generator=gen)
    data = Dataset("tokens", ids[:64], ids[:64, 0] % 3, ids[64:], ids[64:, 0] % 3, 3)
    torch.manual_seed(0)
    start = Tokens()
    finals, histories = {}, {}
    for rule in ("bp", "zil"):
        config = TrainConfig(model="tokens", rule=rule, epochs=2, batch_size=16, lr=0.1, dtype="float64")
        run = build_run(config, data, module=copy.deepcopy(start), loss="ce")
        assert run.data.x_train.dtype == torch.int64 and run.loss == "ce"
        histories[rule] = train(run, progress=False)
        finals[rule] = torch.cat([p.detach().reshape(-1) for p in run.module.parameters()])
    assert float((finals["zil"] - finals["bp"]).norm() / finals["bp"].norm()) < 1e-10
    for bp_row, zil_row in zip(histories["bp"], histories["zil"], strict=True):
        assert zil_row["test_acc"] == bp_row["test_acc"]
        assert zil_row["train_loss"] == pytest.approx(bp_row["train_loss"], rel=1e-10)
    with pytest.raises(ValueError, match="loss must be"):
        build_run(TrainConfig(model="tokens"), data, module=Tokens(), loss="nll")


def test_bad_configs_and_data_give_clear_errors(tmp_path):
    from pcsim.training.data import DataError

    with pytest.raises(ValueError, match="optimizer"):
        build_run(TrainConfig(model=MODEL, optimizer="rmsprop"))
    with pytest.raises(ValueError, match="compile applies to the rules fa-zil, fa-zil-wavefront, il, not 'zil'"):
        build_run(TrainConfig(model=MODEL, rule="zil", compile=True))
    # before: dropped silently, so iPC and Z-IL trained as if the flag had not been given
    with pytest.raises(ValueError, match="il_fixed_prediction applies to the rules il, not 'ipc'"):
        build_run(TrainConfig(model=MODEL, rule="ipc", il_fixed_prediction=True))
    with pytest.raises(ValueError, match="il_output_precision applies to the rules il, not 'zil'"):
        build_run(TrainConfig(model=MODEL, rule="zil", il_output_precision=0.1))
    with pytest.raises(DataError, match="unknown data set 'nope'"):
        load_dataset("nope")
    (tmp_path / "train-images-idx3-ubyte").write_bytes(b"\x00\x00\x08\x03" + b"\x00" * 8)
    with pytest.raises(DataError, match="train-labels-idx1-ubyte"):
        load_dataset(str(tmp_path))
    (tmp_path / "cifar").mkdir()
    (tmp_path / "cifar" / "data_batch_1").write_bytes(b"not a pickle")
    with pytest.raises(DataError, match="data_batch_2"):
        load_dataset(str(tmp_path / "cifar"))


def _write_idx(path: Path, array):
    import struct

    import numpy as np

    array = np.asarray(array, dtype=np.uint8)
    path.write_bytes(bytes([0, 0, 8, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes())


def test_mnist_format_folder_is_read(tmp_path):
    import numpy as np

    rng = np.random.default_rng(0)
    for prefix, n in (("train", 30), ("t10k", 10)):
        _write_idx(tmp_path / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28)))
        _write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte", rng.integers(0, 10, n))
    data = load_dataset(str(tmp_path))
    assert data.input_shape == (1, 28, 28) and len(data.x_train) == 30 and len(data.x_test) == 10
    assert 0.0 <= float(data.x_train.min()) and float(data.x_train.max()) <= 1.0
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(b"\x00\x00\x08\x01\x00\x00\x00\x05abc")
    with pytest.raises(Exception, match="t10k-labels-idx1-ubyte"):
        load_dataset(str(tmp_path))


def test_cli_train_writes_the_contract_files(tmp_path, capsys):
    from pcsim.cli import main

    code = main(["train", MODEL, "--rule", "fa-zil", "--data", "digits", "--epochs", "1", "--out", str(tmp_path),
                 "--no-progress", "--compare-bp"])
    out = capsys.readouterr().out
    assert code == 0 and "bp test acc" in out
    for name in ("model.pt", "metrics.json", "metrics.csv"):
        assert (tmp_path / name).exists(), name
    torch.load(tmp_path / "model.pt", weights_only=True)
    code = main(["train", MODEL, "--data", "nope", "--no-progress"])
    assert code == 2 and "unknown data set 'nope'" in capsys.readouterr().err


@pytest.mark.slow
def test_two_gloo_processes_equal_one_process(tmp_path):
    """torchrun with 2 processes sums the shards' gradients: the same update as the global batch. Both
    processes leave the group cleanly (a gloo process exiting inside it aborts), and rank 0 alone speaks."""
    torchrun = Path(sys.executable).with_name("torchrun")
    common = ["train", MODEL, "--rule", "fa-zil", "--data", "digits", "--epochs", "1", "--batch-size", "64",
              "--dtype", "float32", "--no-progress"]
    one = subprocess.run([sys.executable, "-m", "pcsim", *common, "--out", str(tmp_path / "one")],
                         capture_output=True, text=True, timeout=600)
    assert one.returncode == 0, one.stderr[-2000:]
    two = subprocess.run([str(torchrun), "--standalone", "--nproc_per_node=2", "-m", "pcsim", *common,
                          "--out", str(tmp_path / "two")], capture_output=True, text=True, timeout=600)
    assert two.returncode == 0, two.stderr[-2000:]
    assert two.stdout.count("final: test accuracy") == 1, two.stdout
    a = torch.load(tmp_path / "one" / "model.pt", weights_only=True)
    b = torch.load(tmp_path / "two" / "model.pt", weights_only=True)
    for name in a:
        rel = float((a[name] - b[name]).norm() / a[name].norm())
        assert rel <= 1e-6, (name, rel)


def test_fused_recurrent_layers_train_exactly_like_bp(digits64, monkeypatch):
    """`fused_recurrent`: an LSTM traced as one vertex per layer call, on torch's kernel."""
    model = str(Path(__file__).with_name("small_lstm.py"))
    base = TrainConfig(model=model, rule="bp", epochs=1, batch_size=128, lr=0.5, dtype="float64")
    bp_params, _ = _final(base, digits64)
    traced = []
    real_trace = pcsim.trace

    def spy(*args, **kwargs):
        graph = real_trace(*args, **kwargs)
        traced.append({v.op for v in graph.vertices})
        return graph

    monkeypatch.setattr(pcsim, "trace", spy)
    for rule in ("zil", "fa-zil"):
        params, _ = _final(dataclasses.replace(base, rule=rule, fused_recurrent=True), digits64)
        assert traced and all("lstm" in ops and "sigmoid" not in ops for ops in traced)
        for name, ref in bp_params.items():
            rel = float((params[name] - ref).norm() / ref.norm())
            assert rel <= 1e-10, (rule, name, rel)


@pytest.mark.slow
@pytest.mark.parametrize("rule", ["il", "fa-zil"])
def test_cli_compile_trains_as_the_eager_rule(rule, tmp_path, capsys, monkeypatch):
    """`--compile` reaches the rule's compiled path (code is compiled) and changes no update."""
    from pcsim.algorithms import compiled as compiled_module
    from pcsim.algorithms import fa_zil_wavefront, il_compiled
    from pcsim.cli import main

    built = []
    real = compiled_module.compile_function

    def spy(*args, **kwargs):
        built.append(args[2])
        return real(*args, **kwargs)

    for module in (il_compiled, fa_zil_wavefront):  # where the rules call it
        monkeypatch.setattr(module, "compile_function", spy)
    for mode in ("eager", "compiled"):
        code = main(["train", MODEL, "--rule", rule, "--data", "digits", "--epochs", "1", "--batch-size", "400",
                     "--dtype", "float64", "--out", str(tmp_path / mode), "--no-progress", "--compare-bp",
                     *(["--il-steps", "12"] if rule == "il" else []),  # refused for fa-zil, which has no steps
                     *(["--compile"] if mode == "compiled" else [])])
        assert code == 0
        assert json.loads((tmp_path / mode / "metrics.json").read_text())["config"]["compile"] is (mode == "compiled")
    assert 1 <= len(built) <= 2, "compiled for the --compile run only, once per batch shape"
    a = torch.load(tmp_path / "eager" / "model.pt", weights_only=True)
    b = torch.load(tmp_path / "compiled" / "model.pt", weights_only=True)
    for name in a:
        assert float((a[name] - b[name]).norm() / a[name].norm()) <= 1e-10, name


def test_your_own_data_set_with_an_empty_split_and_a_bad_il_gamma_are_refused_up_front():
    # before: a ZeroDivisionError at the end of the first epoch; --il-gamma -1 trained IL uphill on the energy
    from pcsim.training.data import DataError

    x, y = torch.rand(4, 8, 8), torch.tensor([0, 1, 0, 1])
    with pytest.raises(DataError, match="data set mine: the test split holds no samples"):
        build_run(TrainConfig(model=MODEL), Dataset("mine", x, y, x[:0], y[:0], 2))
    with pytest.raises(ValueError, match="il_gamma must be > 0, got -1"):
        build_run(TrainConfig(model=MODEL, rule="il", il_gamma=-1.0))


@pytest.mark.parametrize("settings, message", [
    # before: each trained to NaN parameters and ended with exit 0
    ({"lr": float("inf")}, "lr must be finite, got inf"),
    ({"momentum": float("nan")}, "momentum must be >= 0 and finite, got nan"),
    # before: torch's 'Invalid momentum value: -1.0', NumPy's 'expected non-negative integer', and IL's
    # 'steps must be >= 0' once the data had loaded, none naming the setting
    ({"momentum": -1.0}, "momentum must be >= 0 and finite, got -1.0"),
    ({"seed": -5}, "seed must be >= 0, got -5"),
    # before: epochs=2.5 trained 3 epochs, the cosine schedule laid over 2.5 (its rate rising again in the third);
    # batch_size=4.0 stopped in the slicing with Python's TypeError, seed=1.5 in torch's manual_seed
    ({"epochs": 2.5, "lr_schedule": "cosine"}, "epochs must be an integer, got 2.5"),
    ({"batch_size": 4.0}, "batch_size must be an integer, got 4.0"),
    ({"checkpoint_every": 0.5}, "checkpoint_every must be an integer, got 0.5"),
    ({"seed": 1.5}, "seed must be an integer, got 1.5"),
    ({"rule": "il", "il_steps": -3}, "il_steps must be an integer >= 1, got -3"),
    ({"rule": "ipc", "il_steps": 0}, "il_steps must be an integer >= 1, got 0"),
    ({"rule": "il", "il_gamma": float("inf")}, "il_gamma must be finite, got inf"),
    # before: ignored silently (Adam has no momentum; Z-IL no inference steps), so the run trained as if the
    # setting had not been given
    ({"optimizer": "adam", "momentum": 0.5}, "momentum applies to the optimizer sgd, not 'adam'"),
    ({"rule": "zil", "il_steps": 50}, "il_steps applies to the rules il, ipc, not 'zil'"),
    ({"rule": "fa-zil", "il_gamma": 0.5}, "il_gamma applies to the rules il, ipc, not 'fa-zil'"),
])
def test_settings_a_run_cannot_use_are_refused_by_name_before_training(settings, message):
    with pytest.raises(ValueError, match=f"^{message}$".replace("(", r"\(").replace(")", r"\)")):
        build_run(TrainConfig(model=MODEL, **settings))


@pytest.mark.parametrize("changed, message", [
    (torch.nn.Sequential(torch.nn.Linear(4, 5), torch.nn.Tanh(), torch.nn.Linear(5, 2)),
     "'0.bias' has shape (3,) there and (5,) in the model"),
    (torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Tanh(), torch.nn.Linear(3, 3), torch.nn.Tanh(),
                         torch.nn.Linear(3, 2)), "the checkpoint has no tensor '4.bias'"),
])
def test_resuming_into_a_model_changed_since_the_run_names_the_tensor(tmp_path, changed, message):
    # before: torch's 'Error(s) in loading state_dict for Sequential', which the CLI blamed on the model
    torch.manual_seed(0)
    x, y = torch.rand(8, 4), torch.tensor([0, 1] * 4)
    data = Dataset("mine", x, y, x, y, 2)
    module = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Tanh(), torch.nn.Linear(3, 2))
    train(build_run(TrainConfig(model="mine", epochs=1, batch_size=4), data, module=module), out=tmp_path,
          progress=False)
    with pytest.raises(CheckpointError, match=f"checkpoint.pt does not fit the model: {message}".replace("(", r"\(")
                       .replace(")", r"\)")):
        resume(tmp_path, data, module=changed)


def test_the_train_loss_is_the_mean_batch_loss_before_each_step_as_a_torch_loop_logs_it():
    # before: each batch was scored after the optimiser's step on it: 1.001 against the loop's 1.131 here
    torch.manual_seed(0)
    x, y = torch.randn(24, 4, dtype=torch.float64), torch.randint(0, 3, (24,))
    data = Dataset("mine", x, y, x[:6], y[:6], 3)
    start = torch.nn.Sequential(torch.nn.Linear(4, 5), torch.nn.Tanh(), torch.nn.Linear(5, 3)).double()
    config = TrainConfig(model="mine", rule="zil", epochs=1, batch_size=8, lr=0.5, dtype="float64", seed=3)
    row = train(build_run(config, data, module=copy.deepcopy(start), loss="ce"), progress=False)[0]
    module, order = copy.deepcopy(start), torch.randperm(24, generator=torch.Generator().manual_seed(3))
    opt = torch.optim.SGD(module.parameters(), lr=0.5, momentum=0.9)
    summed, correct = 0.0, 0
    for i in range(0, 24, 8):
        idx = order[i:i + 8]
        out = module(x[idx])
        loss = torch.nn.functional.cross_entropy(out, y[idx], reduction="sum")
        summed, correct = summed + float(loss), correct + int((out.argmax(1) == y[idx]).sum())
        opt.zero_grad()
        (loss / len(idx)).backward()
        opt.step()
    assert row["train_loss"] == pytest.approx(summed / 24, rel=pcsim.tolerance(torch.float64))
    assert row["train_acc"] == correct / 24


@pytest.mark.parametrize("rule", ["bp", "zil", "fa-zil"])
def test_label_smoothing_trains_as_torchs_cross_entropy_with_it(rule):
    """Soft targets reached the rules (CrossEntropy(label_smoothing=)) but not training. Oracle: a torch loop on
    F.cross_entropy(label_smoothing=s), the parameters after an epoch and the logged train loss."""
    torch.manual_seed(0)
    x, y = torch.randn(24, 4, dtype=torch.float64), torch.randint(0, 3, (24,))
    data = Dataset("mine", x, y, x[:6], y[:6], 3)
    start = torch.nn.Sequential(torch.nn.Linear(4, 5), torch.nn.Tanh(), torch.nn.Linear(5, 3)).double()
    config = TrainConfig(model="mine", rule=rule, epochs=1, batch_size=8, lr=0.5, dtype="float64", seed=3,
                         label_smoothing=0.2)
    run = build_run(config, data, module=copy.deepcopy(start), loss="ce")
    row = train(run, progress=False)[0]
    module, order = copy.deepcopy(start), torch.randperm(24, generator=torch.Generator().manual_seed(3))
    opt = torch.optim.SGD(module.parameters(), lr=0.5, momentum=0.9)
    summed = 0.0
    for i in range(0, 24, 8):
        idx = order[i:i + 8]
        loss = torch.nn.functional.cross_entropy(module(x[idx]), y[idx], reduction="sum", label_smoothing=0.2)
        summed += float(loss)
        opt.zero_grad()
        (loss / len(idx)).backward()
        opt.step()
    assert row["train_loss"] == pytest.approx(summed / 24, rel=pcsim.tolerance(torch.float64))
    for (name, got), (_, want) in zip(run.module.named_parameters(), module.named_parameters(), strict=True):
        assert float((got - want).norm() / want.norm()) <= pcsim.tolerance(torch.float64), name


@pytest.mark.parametrize("smoothing, loss, message", [
    (1.0, "ce", r"label_smoothing must be in \[0, 1\), got 1.0"),
    (-0.1, "ce", r"label_smoothing must be in \[0, 1\), got -0.1"),
    (0.1, "mse", "label_smoothing applies to the loss 'ce', and mine trains with 'mse'"),
])
def test_a_label_smoothing_training_cannot_use_is_refused(smoothing, loss, message):
    x, y = torch.randn(8, 4, dtype=torch.float64), torch.randint(0, 3, (8,))
    with pytest.raises(ValueError, match=message):
        build_run(TrainConfig(model="mine", label_smoothing=smoothing), Dataset("mine", x, y, x, y, 3),
                  module=torch.nn.Linear(4, 3), loss=loss)


def test_ipc_is_refused_data_parallel_where_its_shards_would_not_sum_to_the_batch(monkeypatch):
    # iPC's weights move on the batch during its inference, so its update on a batch is not the sum of its updates on
    # the batch's shards (here 4.1e-2 relative off, by the plain formula below); under torchrun each process ran it on
    # its shard and the summed result was taken as the global batch's, silently
    torch.manual_seed(0)
    x, y = torch.randn(8, 4, dtype=torch.float64), torch.randint(0, 3, (8,))
    module = torch.nn.Sequential(torch.nn.Linear(4, 5), torch.nn.Tanh(), torch.nn.Linear(5, 3)).double()
    graph, lr, steps = pcsim.trace(module, x), 1e-3, 20
    full = pcsim.ipc(graph, (x,), y, loss="ce", lr=lr, steps=steps)
    halves = [pcsim.ipc(pcsim.trace(module, x[i::2]), (x[i::2],), y[i::2], loss="ce", lr=lr, steps=steps)
              for i in (0, 1)]
    assert max(float((full[k] - halves[0][k] - halves[1][k]).norm() / full[k].norm()) for k in full) > 1e-3
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: True)  # two processes, as torchrun starts them
    monkeypatch.setattr(torch.distributed, "get_world_size", lambda: 2)
    monkeypatch.setattr(torch.distributed, "get_rank", lambda: 0)
    run = build_run(TrainConfig(model="mine", rule="ipc", epochs=1, batch_size=4, dtype="float64"),
                    Dataset("mine", x, y, x, y, 3), module=module, loss="ce")
    with pytest.raises(TrainingError, match=r"rule ipc cannot train data-parallel \(2 processes\)"):
        train(run, progress=False)


@pytest.mark.parametrize("optimizer,lr", [("sgd", 0.1), ("adam", 0.01)])
def test_the_cosine_schedule_is_torchs_cosine_annealing_stepped_each_batch_over_the_run(optimizer, lr):
    # 13 samples in batches of 5 (a partial last batch) for 2 epochs: 6 steps, annealed over all 6
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(13, 4, generator=g, dtype=torch.float64), torch.randint(0, 3, (13,), generator=g)
    torch.manual_seed(0)
    start = torch.nn.Sequential(torch.nn.Linear(4, 5), torch.nn.Tanh(), torch.nn.Linear(5, 3)).double()
    config = TrainConfig(model="mine", rule="zil", epochs=2, batch_size=5, lr=lr, optimizer=optimizer,
                         lr_schedule="cosine", dtype="float64", seed=4)
    run = build_run(config, Dataset("mine", x, y, x, y, 3), module=copy.deepcopy(start), loss="ce")
    train(run, progress=False)
    module = copy.deepcopy(start)
    opt = (torch.optim.SGD(module.parameters(), lr=lr, momentum=0.9) if optimizer == "sgd"
           else torch.optim.Adam(module.parameters(), lr=lr))
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=6)
    gen = torch.Generator().manual_seed(4)
    for _ in range(2):
        for idx in torch.randperm(13, generator=gen).split(5):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(module(x[idx]), y[idx]).backward()
            opt.step()
            schedule.step()
    for got, want in zip(run.module.parameters(), module.parameters(), strict=True):
        assert ((got - want).norm() / want.norm()).item() <= pcsim.tolerance(torch.float64)
