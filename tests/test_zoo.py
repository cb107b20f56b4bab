"""pcsim.zoo: finding and importing model files, and the zoo models' own Z-IL check."""

from __future__ import annotations

import re
import sys
import textwrap

import pytest

from pcsim.errors import PcsimError
from pcsim.zoo import ModelFileError, ModelSpec, load_model_file, zoo_dir, zoo_names

CONTRACT_ZOO = {"mlp", "cnn", "rnn"}


def _write_model(folder, stem: str, body: str):
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{stem}.py"
    path.write_text(textwrap.dedent(body))
    return path


TINY = textwrap.dedent("""
    import torch
    from torch import nn

    WIDTH = {width}

    def build(seed=0):
        torch.manual_seed(seed)
        module = nn.Sequential(nn.Linear(3, WIDTH), nn.Tanh(), nn.Linear(WIDTH, 2))
        return module, torch.randn(4, 3), torch.randn(4, 2)
""")


def test_zoo_dir_is_the_repository_models_folder():
    assert zoo_dir().name == "models"
    assert (zoo_dir() / "mlp.py").is_file()


def test_zoo_names_include_the_contract_models():
    names = zoo_names()
    assert CONTRACT_ZOO <= set(names)
    assert all(not n.startswith("_") for n in names)


# Z-IL and Fa-Z-IL on every zoo model (at reduced size): tests/test_zoo_models.py


def test_load_by_name_gives_a_frozen_spec_with_the_file_loss():
    spec = load_model_file("mlp")
    assert isinstance(spec, ModelSpec)
    assert (spec.name, spec.path, spec.loss) == ("mlp", (zoo_dir() / "mlp.py").resolve(), "ce")
    assert load_model_file("rnn").loss == "mse"
    with pytest.raises(AttributeError):
        spec.loss = "mse"


def test_load_by_path_and_dims_reach_build():
    spec = load_model_file(str(zoo_dir() / "mlp.py"))
    module, inputs, target = spec.build_model(seed=1, input_shape=(1, 8, 8), n_classes=4)
    assert isinstance(inputs, tuple) and inputs[0].shape[1:] == (1, 8, 8)
    assert module(*inputs).shape[-1] == 4 and int(target.max()) < 4


def test_same_path_twice_and_same_stem_in_two_folders(tmp_path):
    first = _write_model(tmp_path / "a", "model", TINY.format(width=5))
    second = _write_model(tmp_path / "b", "model", TINY.format(width=7))
    path_before = list(sys.path)
    widths = [load_model_file(str(p)).build_model()[0][0].out_features for p in (first, first, second)]
    assert widths == [5, 5, 7]  # no caching by stem: the second folder's file is its own module
    assert sys.path == path_before


def test_single_tensor_inputs_become_a_tuple(tmp_path):
    path = _write_model(tmp_path, "tiny", TINY.format(width=4))
    module, inputs, target = load_model_file(str(path)).build_model(seed=3)
    assert isinstance(inputs, tuple) and len(inputs) == 1 and inputs[0].shape == (4, 3)
    assert load_model_file(str(path)).loss == "mse"


def test_pcsim_models_env_var_is_honoured(tmp_path, monkeypatch):
    _write_model(tmp_path, "custom", TINY.format(width=6))
    _write_model(tmp_path, "_helper", "X = 1\n")
    monkeypatch.setenv("PCSIM_MODELS", str(tmp_path))
    assert zoo_dir() == tmp_path
    assert zoo_names() == ["custom"]
    assert load_model_file("custom").build_model()[0][0].out_features == 6
    with pytest.raises(ModelFileError, match="custom"):  # the message lists what the zoo holds
        load_model_file("mlp")


BAD_FILES = {
    "no_build": ("X = 1\n", "no build"),
    "raises": ("def build(seed=0):\n    raise RuntimeError('boom in build')\n", "boom in build"),
    "wrong_structure": ("def build(seed=0):\n    return 1, 2\n", "must return"),
    "not_a_module": ("import torch\ndef build(seed=0):\n    return 1, torch.ones(1), torch.ones(1)\n",
                     "nn.Module"),
    "bad_loss": (TINY.format(width=3) + "\nLOSS = 'hinge'\n", "LOSS"),
    "import_fails": ("import no_such_module_for_pcsim\n", "no_such_module_for_pcsim"),
}


@pytest.mark.parametrize("stem", sorted(BAD_FILES))
def test_bad_model_files_raise_errors_naming_the_file(tmp_path, stem):
    body, fragment = BAD_FILES[stem]
    path = _write_model(tmp_path, stem, body)
    with pytest.raises(ModelFileError) as info:
        load_model_file(str(path)).build_model()
    assert isinstance(info.value, PcsimError)
    assert str(path) in str(info.value) and fragment in str(info.value)


def test_missing_file_and_unknown_name_list_the_zoo(tmp_path):
    with pytest.raises(ModelFileError, match=r"not found.*mlp"):
        load_model_file(str(tmp_path / "absent.py"))
    with pytest.raises(ModelFileError, match=r"no zoo model named 'absent'.*mlp"):
        load_model_file("absent")


def test_a_model_file_that_fails_is_reported_at_the_users_line(tmp_path):
    bad_build = tmp_path / "bad_build.py"
    bad_build.write_text("import torch\n\n\ndef build(seed=0):\n    m = torch.nn.Linear(2, 2)\n"
                         "    return m, (torch.randn(3, 4),), m(torch.randn(3, 4))\n")
    with pytest.raises(ModelFileError) as info:
        load_model_file(str(bad_build)).build_model()
    assert f'File "{bad_build}", line 6, in build' in str(info.value)
    assert "mat1 and mat2 shapes cannot be multiplied" in str(info.value)
    bad_import = tmp_path / "bad_import.py"
    bad_import.write_text("import torch\nimport no_such_package_here\n")
    with pytest.raises(ModelFileError, match=re.escape(f'File "{bad_import}", line 2, in <module>')):
        load_model_file(str(bad_import))


def test_a_build_without_the_dims_training_passes_says_which_call_it_cannot_take(tmp_path):
    # before: "build() raised TypeError: build() got an unexpected keyword argument 'input_shape'", as if the
    # file's code had failed
    path = _write_model(tmp_path, "fixed_size", TINY.format(width=3))
    with pytest.raises(ModelFileError, match=re.escape(
            f"{path}: build() cannot be called as build(seed=0, input_shape=(1, 8, 8), n_classes=10): got an "
            "unexpected keyword argument 'input_shape'; give it these arguments (or **dims)")):
        load_model_file(str(path)).build_model(seed=0, input_shape=(1, 8, 8), n_classes=10)
