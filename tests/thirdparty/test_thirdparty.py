"""Third-party models (transformers, einops, torch_geometric, weight-norm TCNs, ...) are exact under Z-IL
and both Fa-Z-IL modes, and so is the continuous-time system's Euler discretisation (zil-euler).

Each file in models/ follows the model-file convention (`build(seed) -> (module, inputs, target)`, `LOSS`);
the oracle is torch autograd on the module itself (pcsim.check). transformers, einops and
torch_geometric are required test dependencies: a missing one is an error, not a skip.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import pcsim
from pcsim.zoo import load_model_file

MODELS_DIR = Path(__file__).resolve().parent / "models"
MODEL_FILES = sorted(p for p in MODELS_DIR.glob("*.py") if not p.name.startswith("_"))
RULES = ["zil", "fa-zil-wavefront", "fa-zil-autonomous", "zil-euler"]  # zil-euler: the ODEs, Euler at dt = tau_x
TOL = pcsim.tolerance(torch.float64)
# The suite's required models; more files may be added next to them.
REQUIRED = {"hf_bert", "hf_bert_sdpa", "hf_gpt2", "hf_gpt2_sdpa", "hf_llama", "hf_vit", "einops_mixer",
            "einops_vit", "pyg_gcn", "pyg_gat", "tcn_weight_norm", "tcn_parametrized", "unet", "mobilenet_block",
            "mobilenet_block_train", "se_groupnorm", "causal_conv1d", "sdpa_block", "seq2seq_gru_attention"}
# library -> text whose presence in a model file's source shows that the file exercises it
LIBRARIES = {"transformers": "from transformers import", "einops": "from einops", "torch_geometric":
             "from torch_geometric", "legacy weight_norm": "from torch.nn.utils import weight_norm",
             "parametrized weight_norm": "from torch.nn.utils.parametrizations import weight_norm"}
# spawning `python -m pcsim` imports torch and the model's library: a handful of models is enough
CLI_MODELS = ["hf_bert", "tcn_weight_norm", "pyg_gat", "unet"]

pytestmark = [pytest.mark.usefixtures("one_thread"),
              # torch_geometric scripts a helper on import: torch 2.13 deprecates torch.jit.script
              pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")]


def _worst(report, n: int = 5) -> str:
    ranked = sorted(report.per_param.items(), key=lambda kv: kv[1].rel, reverse=True)[:n]
    return "worst parameters: " + ", ".join(f"{name} rel {d.rel:.3e} max_abs {d.max_abs:.3e}" for name, d in ranked)


@pytest.mark.parametrize("path", MODEL_FILES, ids=lambda p: p.stem)
def test_thirdparty_model_is_exact(path):
    spec = load_model_file(path)
    module, inputs, target = spec.build_model(seed=0)
    # every rule on one capture and one oracle (capturing a Hugging Face model is most of the time)
    reports = pcsim.check_rules(module, inputs, target, RULES, loss=spec.loss, dtype=torch.float64)
    assert [r.rule for r in reports] == RULES
    for rep in reports:
        message = f"{_worst(rep)}\n{rep.table(model=spec.name)}"
        assert rep.passed, message
        assert rep.max_rel_diff <= TOL, message


def test_the_suite_covers_the_named_models_and_libraries():
    names = {p.stem for p in MODEL_FILES}
    assert len(names) >= 16
    assert REQUIRED <= names, f"missing model files: {sorted(REQUIRED - names)}"
    sources = {p.stem: p.read_text() for p in MODEL_FILES}
    for library, marker in LIBRARIES.items():
        users = [name for name, src in sources.items() if marker in src]
        assert users, f"no model file exercises {library} (no file contains {marker!r})"
    for name, src in sources.items():
        assert src.startswith('"""') and src.split("\n", 1)[0].endswith('"""'), f"{name}: needs a one-line docstring"


@pytest.fixture(scope="module")
def cli_runs():
    """`python -m pcsim check FILE --json` for every CLI model, the processes started together (each
    spends most of its time importing torch): name -> (returncode, stdout, stderr)."""
    procs = {name: subprocess.Popen([sys.executable, "-m", "pcsim", "check", str(MODELS_DIR / f"{name}.py"), "--json",
                                     "--threads", "1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for name in CLI_MODELS}
    results = {}
    try:
        for name, proc in procs.items():
            out, err = proc.communicate(timeout=300)
            results[name] = (proc.returncode, out, err)
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    return results


@pytest.mark.parametrize("name", CLI_MODELS)
def test_cli_checks_a_thirdparty_model_file(cli_runs, name):
    returncode, stdout, stderr = cli_runs[name]
    assert returncode == 0, f"exit {returncode}\nstdout: {stdout}\nstderr: {stderr[-3000:]}"
    result = json.loads(stdout)
    assert result["passed"] is True, result
    assert result["model"] == name and result["rule"] == "zil" and result["dtype"] == "float64"
