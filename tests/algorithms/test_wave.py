"""`wave.Sums`: in-place accumulation that is bit for bit the out-of-place sum, and writes only its own tensors."""

import torch

from pcsim.algorithms.wave import Sums


def test_sums_equal_left_to_right_out_of_place_sums_bit_for_bit():
    gen = torch.Generator().manual_seed(0)
    terms = [torch.randn(7, 5, generator=gen) * 10.0 ** k for k in (-3, 0, 2, -1, 4)]
    sums = Sums()
    expected = None
    for t in terms:
        sums.add("w", t)
        expected = t if expected is None else expected + t
    assert torch.equal(sums["w"], expected)


def test_sums_never_write_a_term_or_a_popped_total():
    a, b, c, d = (torch.full((3,), float(v)) for v in (1, 2, 4, 8))
    copies = [t.clone() for t in (a, b, c, d)]
    sums = Sums()
    sums.add("k", a)
    assert sums["k"] is a  # the first term is kept as given
    sums.add("k", b)
    sums.add("k", c)  # now into the sum's own buffer
    total = sums.pop("k")
    sums.add("k", total)  # a popped tensor is the caller's again: the next term makes a new one
    sums.add("k", d)
    assert torch.equal(total, torch.full((3,), 7.0))
    assert torch.equal(sums["k"], torch.full((3,), 15.0))
    for t, orig in zip((a, b, c, d), copies, strict=True):
        assert torch.equal(t, orig)


def test_sums_broadcast_terms_fall_back_to_out_of_place():
    sums = Sums()
    sums.add("b", torch.ones(3))
    sums.add("b", torch.ones(3))
    sums.add("b", torch.ones(2, 3))  # does not fit the owned buffer: a new, broadcast sum
    assert sums["b"].shape == (2, 3) and torch.equal(sums["b"], torch.full((2, 3), 3.0))
