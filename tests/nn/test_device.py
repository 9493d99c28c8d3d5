"""Device tests (marker ``device``; ``LARPANDA_TEST_DEVICE`` picks the device, default cpu): patch
attention against a naive per-patch loop, the PTv3 fixture under bf16 autocast, and bit-identical eval
outputs. ``benchmarks/gpu_check.py`` runs every ``device``-marked test on the GPU."""

from __future__ import annotations

import os

import pytest
import torch

from larpanda.config import load_config
from larpanda.data.point import Point
from larpanda.nn import attention
from larpanda.nn.attention import PatchPlan, composed_indices, patch_attention
from larpanda.nn.ptv3 import PointTransformerV3

pytestmark = pytest.mark.device

# bf16 keeps 8 significant bits: unit roundoff u = 2^-9 (relative error of one rounding).
BF16_U = 2.0 ** -9


def _naive_attention(qkv: torch.Tensor, counts, k: int, heads: int, scale: float) -> torch.Tensor:
    """float64 softmax attention, patch by patch, with the flash semantics of `attention.PatchPlan`:
    patches at 0, K, 2K, ... and a last patch of the last K points; n <= K: one sequence; each position
    keeps the output of the first patch that contains it."""
    qkv = qkv.detach().double().cpu()
    c = qkv.shape[1] // 3
    out = torch.empty(qkv.shape[0], c, dtype=torch.float64)
    start = 0
    for n in counts:
        m = -(-n // k)
        patches = [range(n)] if n <= k else [range(j * k, j * k + k) for j in range(m - 1)] + [range(n - k, n)]
        done = set()
        for p in patches:
            x = qkv[torch.tensor(list(p)) + start].view(len(p), 3, heads, c // heads)
            q, kk, v = x[:, 0].transpose(0, 1), x[:, 1].transpose(0, 1), x[:, 2].transpose(0, 1)  # (H, L, D)
            o = (torch.softmax(q @ kk.transpose(1, 2) * scale, -1) @ v).transpose(0, 1).reshape(len(p), c)
            for r, pos in enumerate(p):
                if pos not in done:
                    out[start + pos] = o[r]
                    done.add(pos)
        start += n
    return out


@pytest.mark.parametrize("impl", ["sdpa", "reference"])
def test_patch_attention_matches_naive(device, impl, monkeypatch):
    """Full patches (overlapping last patch), events shorter than K of two lengths (key mask), and the
    row-order path (plan composed with a serialization order) against the float64 loop."""
    monkeypatch.setattr(attention, "IMPL", impl)
    counts, k, heads, c = [5, 16, 40, 100, 37, 3], 16, 2, 8
    gen = torch.Generator().manual_seed(0)
    n = sum(counts)
    qkv = torch.randn(n, 3 * c, generator=gen)
    scale = (c // heads) ** -0.5
    offset = torch.cumsum(torch.tensor(counts), 0)
    plan = PatchPlan(offset, k, device)
    ref = _naive_attention(qkv, counts, k, heads, scale)
    out = patch_attention(qkv.to(device), plan, heads, scale)
    torch.testing.assert_close(out.double().cpu(), ref, atol=1e-5, rtol=0)
    # rows in point order: serialized order = a per-event permutation
    order = torch.cat([torch.randperm(m, generator=gen) + s for m, s in zip(counts, [0] + offset[:-1].tolist())])
    point = {"serialized_order": order[None].to(device), "serialized_inverse": torch.argsort(order)[None].to(device)}
    gather, src = composed_indices(point, plan, 0)
    rows = patch_attention(qkv.to(device), plan, heads, scale, gather=gather, src=src)
    ref_rows = _naive_attention(qkv[order], counts, k, heads, scale)[torch.argsort(order)]
    torch.testing.assert_close(rows.double().cpu(), ref_rows, atol=1e-5, rtol=0)


def _fixture_model(fixtures_dir, device):
    d = torch.load(fixtures_dir / "panda_ref_small.pt", weights_only=True)
    model = PointTransformerV3(**d["config"])
    model.load_state_dict(d["state_dict"], strict=True)
    i = d["inputs_single"]
    point = Point(coord=i["coord"], grid_coord=i["grid_coord"], feat=i["feat"], offset=i["offset"])
    return d, model.eval().to(device), point.to(device)


def test_small_fixture_bf16_autocast(fixtures_dir, device):
    """The fixture's up-cast features under bf16 autocast, within a bf16 tolerance of the official fp32 outputs.

    Tolerance: |err| <= 16u (1 + |ref|) elementwise (atol = rtol = 2^-5 ~ 0.031) and mean |err| <= 4u, with
    u = 2^-9. Every autocast matmul rounds its inputs to bf16 (relative error u each) and the errors add
    up over the linears of the 5 stages (LayerNorm re-normalises, so they stay relative to the feature
    scale, hence the (1 + |ref|) form). Measured on CPU autocast: max 7u (1 + |ref|), mean 1.6u; the
    bounds leave about 2x for a different accumulation order on the GPU. The fp32 path is held to 1e-4."""
    d, model, point = _fixture_model(fixtures_dir, device)
    with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16):
        out = model(point, upcast=True).feat
    out = out.float().cpu()
    ref = d["outputs_single"]["upcast_feat"]
    assert out.shape == ref.shape == (1175, 104)
    torch.testing.assert_close(out, ref, atol=16 * BF16_U, rtol=16 * BF16_U)
    assert float((out - ref).abs().mean()) <= 4 * BF16_U


def _decoder_model(device):
    cfg = load_config("tiny", "model")
    cfg.update(enc_mode=False, drop_path=0.0)
    torch.manual_seed(0)
    m = PointTransformerV3(**cfg)
    with torch.no_grad():  # non-trivial layer scales so the attention/MLP paths matter numerically
        for name, p in m.named_parameters():
            if name.endswith("gamma"):
                p.uniform_(0.2, 0.8)
    return m.eval().to(device)


@pytest.mark.parametrize("algorithms", ["default", "deterministic"])
@pytest.mark.parametrize("layout", ["encoder", "decoder"])
def test_eval_bit_identical(fixtures_dir, device, layout, algorithms):
    """The same event twice through the model in eval mode gives bit-identical outputs, with PyTorch's
    default kernels and with ``torch.use_deterministic_algorithms`` (a GPU may differ between the two:
    float atomics in scatter-adds). Input: the fixture event tiled 9 times (10,557 voxels)."""
    from larpanda.bench.backbone import tiled_fixture

    if layout == "encoder":
        model = _fixture_model(fixtures_dir, device)[1]
    else:
        model = _decoder_model(device)
    point = tiled_fixture(9).to(device)
    was, warn = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    if algorithms == "deterministic":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        with torch.no_grad():
            a = model(Point(point)).feat.cpu()
            b = model(Point(point)).feat.cpu()
    finally:
        torch.use_deterministic_algorithms(was, warn_only=warn)
    assert a.shape[0] == 10557 and torch.isfinite(a).all()
    diff = float((a - b).abs().max())
    assert torch.equal(a, b), f"two eval passes differ by up to {diff:.3g}"
