"""`pcsim train`'s flags: --resume honours or refuses the flags given with it; --out is checked before training."""

from pathlib import Path

import pytest
import torch

from pcsim.cli import main

MODEL = str(Path(__file__).parent.with_name("training") / "small_mlp.py")
RUN = [MODEL, "--data", "synthetic", "--batch-size", "100", "--no-progress"]


def _weights(folder: Path) -> dict:
    return torch.load(folder / "model.pt", weights_only=True)


def test_resume_with_more_epochs_ends_as_the_uninterrupted_run(tmp_path):
    # before: the checkpoint's epochs won and --epochs 2 was silently ignored (nothing trained, exit 0)
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    assert main(["train", *RUN, "--epochs", "2", "--out", str(straight)]) == 0
    assert main(["train", *RUN, "--epochs", "1", "--out", str(resumed)]) == 0
    assert main(["train", *RUN, "--epochs", "2", "--resume", str(resumed)]) == 0
    a, b = _weights(straight), _weights(resumed)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("flags, message", [
    (["--rule", "il"], "--rule il (the run has zil)"),
    (["--lr", "0.5"], "--lr 0.5 (the run has 0.05)"),
    (["--fused"], "--fused True (the run has False)"),
    (["--epochs", "0"], "epochs must be >= 1"),
])
def test_resume_refuses_flags_that_differ_from_the_run(tmp_path, capsys, flags, message):
    # before: --rule il on resume trained Z-IL, silently
    assert main(["train", *RUN, "--epochs", "1", "--out", str(tmp_path)]) == 0
    capsys.readouterr()
    assert main(["train", *RUN, *flags, "--resume", str(tmp_path)]) == 2
    assert message in capsys.readouterr().err


def test_resume_refuses_another_model_and_fewer_epochs(tmp_path, capsys):
    assert main(["train", *RUN, "--epochs", "2", "--out", str(tmp_path)]) == 0
    capsys.readouterr()
    assert main(["train", "mlp", *RUN[1:], "--resume", str(tmp_path)]) == 2
    assert f"MODEL mlp (the run has {MODEL})" in capsys.readouterr().err
    assert main(["train", *RUN, "--epochs", "1", "--resume", str(tmp_path)]) == 2
    assert "has already trained 2 epochs" in capsys.readouterr().err


def test_out_that_is_a_file_or_unmakeable_fails_before_training(tmp_path, capsys):
    # before: a raw pathlib stack from mkdir, after the first epoch's training
    a_file = tmp_path / "taken"
    a_file.write_text("")
    assert main(["train", *RUN, "--epochs", "1", "--out", str(a_file)]) == 2
    err = capsys.readouterr()
    assert f"--out {a_file} is a file" in err.err and "epoch" not in err.out
    assert main(["train", *RUN, "--epochs", "1", "--out", str(a_file / "below")]) == 2
    assert "cannot write --out" in capsys.readouterr().err


def test_negative_check_every_is_refused(capsys):
    # before: step % -1 == 0, so a negative N checked every step
    assert main(["train", *RUN, "--epochs", "1", "--check-every", "-1"]) == 2
    assert "check_every must be >= 0" in capsys.readouterr().err


def test_compare_bp_beside_il_with_its_own_settings_trains(capsys):
    # BP's run beside IL takes none of IL's settings (TrainConfig refuses il_steps for bp)
    assert main(["train", *RUN, "--epochs", "1", "--rule", "il", "--il-steps", "3", "--il-gamma", "0.2",
                 "--compare-bp"]) == 0
    assert "bp test acc" in capsys.readouterr().out


def test_ctrl_c_ends_with_the_resume_line_and_resuming_ends_as_the_uninterrupted_run(tmp_path, capsys, monkeypatch):
    # before: KeyboardInterrupt's stack from wherever the rule was (zil.py, displacement.py), exit -2
    import pcsim.cli.train as cli_train

    straight, stopped = tmp_path / "straight", tmp_path / "stopped"
    assert main(["train", *RUN, "--epochs", "3", "--out", str(straight)]) == 0
    real = cli_train.train

    def interrupted_in_the_second_epoch(run, **kw):
        def on_epoch(row):  # the epoch's checkpoint is written after this returns: Ctrl-C in epoch 2's
            kw["on_epoch"](row)
            if row["epoch"] == 2:
                raise KeyboardInterrupt
        return real(run, **{**kw, "on_epoch": on_epoch})

    monkeypatch.setattr(cli_train, "train", interrupted_in_the_second_epoch)
    capsys.readouterr()
    assert main(["train", *RUN, "--epochs", "3", "--out", str(stopped)]) == 130
    out, err = capsys.readouterr()
    assert f"--resume {stopped}` continues from its checkpoint at step 4" in out
    assert err == "pcsim: interrupted\n"
    monkeypatch.setattr(cli_train, "train", real)
    assert main(["train", *RUN, "--resume", str(stopped)]) == 0
    a, b = _weights(straight), _weights(stopped)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_checkpoint_every_without_out_is_refused(capsys):
    # before: no checkpoint was written anywhere, silently, and the run trained to the end
    assert main(["train", *RUN, "--epochs", "1", "--checkpoint-every", "2"]) == 2
    captured = capsys.readouterr()
    assert "--checkpoint-every 2 writes checkpoints into --out DIR" in captured.err and "epoch" not in captured.out
