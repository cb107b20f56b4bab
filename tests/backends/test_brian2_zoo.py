"""Every zoo model at test size runs on Brian2's numpy target as real NeuronGroups and Synapses, on
pcsim's Euler path, with Z-IL's gradients (oracles: tests/backends/brian2_oracle.py)."""

import pytest

from pcsim.zoo import SMALL_DIMS, load_model_file, zoo_names
from tests.backends.brian2_oracle import check_zil_on_brian2, quiet_pyparsing

pytest.importorskip("brian2")
pytestmark = quiet_pyparsing


# Brian2 builds a population per vertex, so a recurrent model's build time grows with its sequence: three steps
# hold every op and wiring of the longer test size (the recurrent weights act from the second step)
SHORTER = {"gru": dict(input_shape=(3, 3)), "lstm": dict(input_shape=(3, 3)), "rnn": dict(input_shape=(3, 3))}


@pytest.mark.parametrize("name", zoo_names())
def test_zoo_model_on_brian2_is_pcsims_euler_path_and_zil_exact(name):
    spec = load_model_file(name)
    module, inputs, target = spec.build_model(seed=0, **{**SMALL_DIMS.get(name, {}), **SHORTER.get(name, {})})
    check_zil_on_brian2(module.double(), inputs, target, spec.loss)
