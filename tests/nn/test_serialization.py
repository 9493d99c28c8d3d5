"""Serialization: hand-computed codes, encode/decode inverse, Hilbert adjacency, batching."""

from __future__ import annotations

import torch

from larpanda.nn.serialization import (ORDERS, encode, event_depths, hilbert_decode, hilbert_encode, serialize,
                                       z_decode, z_encode)

CUBE = torch.tensor([[x, y, z] for x in range(2) for y in range(2) for z in range(2)])


def test_z_hand_computed():
    # bit i of x -> 3i+2, y -> 3i+1, z -> 3i
    assert z_encode(torch.tensor([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 1], [2, 0, 0], [0, 3, 0]]), 2).tolist() == [4, 2, 1, 7, 32, 18]
    assert encode(torch.tensor([[1, 0, 0]]), 2, "z-trans").tolist() == [2]


def test_hilbert_hand_computed_depth1():
    # depth 1: no transform; gray = Morton code, binary = prefix XOR: 100->111, 010->011, 110->100, ...
    codes = hilbert_encode(CUBE, 1)
    expect = {(0, 0, 0): 0, (0, 0, 1): 1, (0, 1, 1): 2, (0, 1, 0): 3, (1, 1, 0): 4, (1, 1, 1): 5, (1, 0, 1): 6, (1, 0, 0): 7}
    assert {tuple(p): int(c) for p, c in zip(CUBE.tolist(), codes)} == expect
    assert encode(torch.tensor([[1, 0, 0]]), 1, "hilbert-trans").tolist() == [3]


def test_encode_decode_inverse_random():
    g = torch.Generator().manual_seed(0)
    for depth in (1, 3, 7, 11, 16):
        grid = torch.randint(0, 2**depth, (500, 3), generator=g)
        assert torch.equal(z_decode(z_encode(grid, depth), depth), grid)
        assert torch.equal(hilbert_decode(hilbert_encode(grid, depth), depth), grid)


def test_hilbert_is_a_continuous_curve():
    for depth in (2, 3):
        n = 2 ** (3 * depth)
        pts = hilbert_decode(torch.arange(n), depth)
        assert torch.equal(hilbert_encode(pts, depth), torch.arange(n))
        assert (pts[1:] - pts[:-1]).abs().sum(1).eq(1).all()  # consecutive codes are face neighbours
        assert len(torch.unique(pts, dim=0)) == n


def test_batch_invariant_depth_and_contiguous_events():
    g = torch.Generator().manual_seed(1)
    a = torch.randint(0, 1000, (300, 3), generator=g)  # depth 10
    b = torch.randint(0, 50, (200, 3), generator=g)  # depth 6
    assert event_depths(torch.cat([a, b]), torch.tensor([300, 500])) == [10, 6]
    s = serialize(torch.cat([a, b]), torch.tensor([300, 500]))
    sa, sb = serialize(a, torch.tensor([300])), serialize(b, torch.tensor([200]))
    for k in range(4):
        # events stay contiguous and each keeps the order it has alone
        assert torch.equal(s["order"][k, :300], sa["order"][k])
        assert torch.equal(s["order"][k, 300:] - 300, sb["order"][k])
        assert torch.equal(s["inverse"][k][s["order"][k]], torch.arange(500))
    assert torch.equal(s["code"][:, :300], sa["code"])  # batch 0: no high bits
    assert (s["code"][:, 300:] >> 30 == 1).all()  # batch id at bit 3 * max depth


def test_morton_bits_against_one_bit_at_a_time():
    g = torch.Generator().manual_seed(2)
    for depth in (1, 5, 16, 21):
        v = torch.randint(0, 2**depth, (400, 3), generator=g)
        slow = sum(((v[:, a] >> i) & 1) << (3 * i + 2 - a) for a in range(3) for i in range(depth))
        assert torch.equal(z_encode(v, depth), slow)


def test_mixed_depth_batch_codes_equal_each_event_alone():
    """One pass over a batch of events at depths 1 to 11 gives each event the codes it has alone."""
    g = torch.Generator().manual_seed(3)
    grids = [torch.randint(0, hi, (n, 3), generator=g) for hi, n in ((1, 5), (2, 40), (9, 60), (2000, 80), (300, 1), (33, 70))]
    offset = torch.tensor([len(x) for x in grids]).cumsum(0)
    s = serialize(torch.cat(grids), offset, ORDERS)
    depths = event_depths(torch.cat(grids), offset)
    assert depths == [1, 2, 4, 11, 9, 6] and s["depth"] == 11
    start = 0
    for e, (grid, d) in enumerate(zip(grids, depths)):
        for k, name in enumerate(ORDERS):
            assert torch.equal(s["code"][k, start:start + len(grid)], encode(grid, d, name) | (e << 33)), (e, name)
        start += len(grid)


def test_orders_names():
    grid = torch.tensor([[3, 1, 2], [0, 5, 7]])
    for name in ORDERS:
        assert encode(grid, 3, name).shape == (2,)
    assert torch.equal(encode(grid, 3, "hilbert-trans"), hilbert_encode(grid[:, [1, 0, 2]], 3))
