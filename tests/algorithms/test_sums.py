"""`Sums`: in-place accumulation that is bit for bit the out-of-place sum (placed parts as their zero-padded
forms), and writes only its own tensors."""

import torch

from pcsim.algorithms.sums import Sums
from pcsim.ops.local import Placed, Where


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


def _place(parent: torch.Tensor, part: torch.Tensor, value: torch.Tensor) -> Placed:
    return Placed(value, Where(tuple(parent.shape), tuple(part.shape), tuple(part.stride()),
                               part.storage_offset() - parent.storage_offset()))


def test_placed_terms_equal_their_zero_padded_forms_in_any_order():
    gen = torch.Generator().manual_seed(1)
    parent = torch.randn(4, 2, 9, generator=gen)
    chunks = parent.chunk(3, -1)
    cots = [torch.randn(c.shape, generator=gen) for c in chunks]
    full = torch.randn(parent.shape, generator=gen)

    def padded(i):
        z = torch.zeros_like(parent)
        z.chunk(3, -1)[i].copy_(cots[i])
        return z

    orders = [["p0", "p1", "p2"], ["full", "p2", "p0"], ["p1", "full", "p1", "full"], ["p0", "full"]]
    for order in orders:
        sums, expected = Sums(), None
        for item in order:
            term, dense = (full, full) if item == "full" else (_place(parent, chunks[int(item[1])], cots[int(item[1])]),
                                                                padded(int(item[1])))
            sums.add("x", term)
            expected = dense if expected is None else expected + dense
        assert torch.equal(sums["x"], expected), order
    assert torch.equal(full, full.clone())


def test_a_placed_term_never_writes_a_term_it_does_not_own():
    parent = torch.zeros(3, 4)
    first = torch.ones(3, 4)
    sums = Sums()
    sums.add("x", first)
    sums.add("x", _place(parent, parent[1:, ::2], torch.full((2, 2), 5.0)))
    assert torch.equal(first, torch.ones(3, 4))
    expected = torch.ones(3, 4)
    expected[1:, ::2] += 5.0
    assert torch.equal(sums["x"], expected)
