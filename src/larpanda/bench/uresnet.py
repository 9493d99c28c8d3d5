"""UResNet benchmark: training step (fwd+bwd) and eval forward time and peak memory vs input size.

Inputs: the fixture event tiled k = 1, 3, 9, 27 times (1,175 / 3,523 / 10,557 / 31,413 voxels; see
`larpanda.bench.backbone.tiled_fixture`). Baselines in the same process, on the same Point:
the PTv3 ``small`` preset (enc_mode, up-cast; a training step through the encoder) — ``ratio_vs_ptv3`` =
ptv3_time / uresnet_time (> 1: UResNet faster) — and the UResNet's own per-offset loop convolution path
(the single-gather im2col path, ``ratio_vs_gather`` = gather_time / loop_time). Times are the minimum of interleaved repetitions.
"""

from __future__ import annotations

import time

import torch


def _timed(fn, reps):
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def run(points=None, quick: bool = False, device: str = "cpu"):
    from ..config import load_config
    from ..nn import uresnet as U
    from ..nn.ptv3 import PointTransformerV3
    from .backbone import _PeakRSS, tiled_fixture

    tiles = [1, 3] if quick else [1, 3, 9, 27]
    if points:
        tiles = [k for k in (1, 3, 9, 27) if any(abs(k * 1175 - p) <= 0.5 * k * 1175 for p in points)] or tiles
    reps = 2 if quick else 3
    torch.manual_seed(0)
    net = U.build_uresnet("uresnet-base", in_channels=1, num_classes=5).to(device)
    ptv3 = PointTransformerV3(**{**load_config("small", "model"), "enc_mode": True, "mask_token": False}).to(device)
    rows = []
    for k in tiles:
        point = tiled_fixture(k).to(device)
        point.ensure_batch()
        coords = U.batch_coords(point["voxel_coord"], point["batch"])  # the voxel lattice, as the semantic task
        feat = point["feat"][:, 3:4].contiguous()
        labels = torch.randint(0, 5, (len(coords),), device=device)

        def u_train():
            net.train()
            loss = torch.nn.functional.cross_entropy(net(feat, coords), labels)
            loss.backward()
            net.zero_grad(set_to_none=True)

        def u_eval():
            net.eval()
            with torch.no_grad():
                net(feat, coords)

        def p_train():
            ptv3.train()
            inp = type(point)({kk: point[kk] for kk in ("coord", "grid_coord", "feat", "offset")})
            ptv3(inp, upcast=True)["feat"].square().mean().backward()
            ptv3.zero_grad(set_to_none=True)

        def u_train_gather():
            old = U.IM2COL_MAX_ELEMENTS
            U.IM2COL_MAX_ELEMENTS = 1 << 40
            try:
                u_train()
            finally:
                U.IM2COL_MAX_ELEMENTS = old

        u_train()  # warm-up
        with _PeakRSS() as mem:
            u_train()
        t_u, t_e, t_p, t_l = [], [], [], []
        for _ in range(reps):  # interleaved
            t_u.append(_timed(u_train, 1))
            t_e.append(_timed(u_eval, 1))
            t_p.append(_timed(p_train, 1))
            t_l.append(_timed(u_train_gather, 1))
        tu, tp, tl = min(t_u), min(t_p), min(t_l)
        rows.append({
            "points": int(len(coords)), "model": "uresnet-base", "params": U.num_parameters(net),
            "train_step_s": round(tu, 4), "eval_forward_s": round(min(t_e), 4),
            "train_peak_mem_mb": round(mem.peak - mem.base, 1),
            "baseline_ptv3_small_train_step_s": round(tp, 4), "ratio_vs_ptv3": round(tp / tu, 3),
            "gather_path_train_step_s": round(tl, 4), "ratio_vs_gather": round(tl / tu, 3),
            "device": device, "threads": torch.get_num_threads(),
        })
    return rows
