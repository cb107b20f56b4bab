"""Every architecture of the equivalence suite runs on Brian2's numpy target, on pcsim's Euler path, with
Z-IL's gradients (oracles: tests/backends/brian2_oracle.py)."""

import pytest
import torch

from tests.backends.brian2_oracle import check_zil_on_brian2, quiet_pyparsing
from tests.equivalence.archs import ARCHS

pytest.importorskip("brian2")
pytestmark = quiet_pyparsing


@pytest.mark.parametrize("arch", list(ARCHS))
def test_architecture_on_brian2_is_pcsims_euler_path_and_zil_exact(arch):
    check_zil_on_brian2(*ARCHS[arch](torch.float64, "mse"), "mse")


@pytest.mark.parametrize("arch", ["cnn_pools", "attention"])
def test_cross_entropy_output_on_brian2(arch):
    """The output error y - softmax(mu), its normaliser pooled per sample by a helper neuron."""
    check_zil_on_brian2(*ARCHS[arch](torch.float64, "ce"), "ce")
