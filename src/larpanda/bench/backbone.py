"""Backbone benchmark: eval forward and training step (fwd+bwd) time and peak memory per input size.

Inputs (as the official-code CPU baseline of docs/model.md §1.10): the fixture event tiled k = 1, 3, 9, 27 times with shifts of
7 voxels (k=3: x in {0,7,14}; k=9: x,y grid; k=27: x,y,z grid), duplicates removed
(1,175 / 3,523 / 10,557 / 31,413 voxels), plus simulated events (``points`` = target raw voxel counts).
Preprocessing = the reference transform (NormalizeCoord, LogTransform, GridSample order).

Baseline in the same process, same weights and same outputs: the "reference-style" forward, i.e. the
official CPU structure: per-offset gather -> mm -> scatter-add submanifold conv (``algo="reference"``)
and explicit bmm/softmax attention on the padded patches (``attention.IMPL = "reference"``). Ratios are
baseline_time / our_time (> 1: we are faster), from interleaved repetitions (min and median). Peak memory = peak process RSS sampled every 2 ms during
the call minus the RSS before it (model weights excluded), plus the absolute peak.
"""

from __future__ import annotations

import os
import statistics
import threading
import time
from pathlib import Path

import numpy as np
import torch

from ..constants import ENERGY_THRESHOLD_MEV

TILE_SHIFTS = {1: (1, 1, 1), 3: (3, 1, 1), 9: (3, 3, 1), 27: (3, 3, 3)}
FIXTURE = Path(__file__).resolve().parents[3] / "tests" / "fixtures" / "pilarnet_m_test_event0_recon.npz"


def _rss_mb() -> float:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:  # not Linux: fall back to the lifetime peak
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class _PeakRSS:
    def __enter__(self):
        self.base = _rss_mb()
        self.peak = self.base
        self._stop = False
        self._t = threading.Thread(target=self._poll, daemon=True)
        self._t.start()
        return self

    def _poll(self):
        while not self._stop:
            self.peak = max(self.peak, _rss_mb())
            time.sleep(0.002)

    def __exit__(self, *exc):
        self._stop = True
        self._t.join()
        self.peak = max(self.peak, _rss_mb())


def _prepare(voxel: np.ndarray, energy: np.ndarray):
    from ..data.point import Point
    from ..data.transforms import grid_sample, log_transform, normalize_coord

    coord = normalize_coord(voxel.astype(np.float32))
    order, grid = grid_sample(coord)
    coord = coord[order]
    e = log_transform(energy[order].astype(np.float32))[:, None]
    return Point(coord=torch.from_numpy(coord), grid_coord=torch.from_numpy(grid),
                 voxel_coord=torch.from_numpy(voxel[order].astype(np.int64)),
                 feat=torch.from_numpy(np.concatenate([coord, e], 1)), offset=torch.tensor([len(coord)]))


def tiled_fixture(k: int):
    """The fixture event tiled k in {1,3,9,27} times (shifts of 7 voxels), as a one-event Point."""
    z = np.load(FIXTURE)
    v, e = z["voxel"].astype(np.int64), z["energy"].astype(np.float32)
    nx, ny, nz = TILE_SHIFTS[k]
    shifts = [np.array((7 * i, 7 * j, 7 * l)) for i in range(nx) for j in range(ny) for l in range(nz)]
    allv = np.concatenate([v + s for s in shifts])
    alle = np.concatenate([e] * len(shifts))
    allv, first = np.unique(allv, axis=0, return_index=True)
    return _prepare(allv, alle[first])


def simulated(points: int, seed: int = 0):
    """A simulated event with about ``points`` raw voxels (events merged until reached), E > 0.13 MeV."""
    from ..sim.generate import generate_event

    vs, es, n, i = [], [], 0, 0
    while n < points:
        ev = generate_event(seed, i)
        keep = ev.energy > ENERGY_THRESHOLD_MEV
        vs.append(ev.voxel[keep])
        es.append(ev.energy[keep])
        n += int(keep.sum())
        i += 1
    v, first = np.unique(np.concatenate(vs), axis=0, return_index=True)
    v, e = v[:points], np.concatenate(es)[first][:points]
    return _prepare(v, e)


def batched(point, copies: int):
    """``copies`` events, each a copy of the one-event ``point``, collated as one batch (offsets per copy)."""
    from ..data.point import Point

    if copies == 1:
        return point
    n = point.coord.shape[0]
    return Point(coord=point.coord.repeat(copies, 1), grid_coord=point.grid_coord.repeat(copies, 1),
                 feat=point.feat.repeat(copies, 1), offset=torch.arange(1, copies + 1) * n)


MATMULS = ("aten::addmm", "aten::mm")  # linear layers and sparse-conv GEMMs: the same calls in both paths


def gemm_account(model, point) -> dict:
    """Profile one eval forward of each path: the GFLOP and self time (s) of the GEMMs that both paths
    run identically (`MATMULS`: every linear layer and every sparse-conv GEMM; attention's own matmuls
    excluded); ``gemm_s`` is the faster of the two runs. That time is a floor under our total at these
    FLOPs: no reordering of the rest can take the eval time below it."""
    from torch.profiler import profile

    fn = _runner(model, point, "cpu", False)
    out = {}
    for tag, ref in (("ours", False), ("baseline", True)):
        _set_reference(model, ref)
        fn()
        with profile(record_shapes=True) as prof:
            fn()
        flops = secs = 0.0
        for r in prof.key_averages(group_by_input_shape=True):
            if r.key in MATMULS:
                a, b = (r.input_shapes[1], r.input_shapes[2]) if r.key == "aten::addmm" else r.input_shapes[:2]
                flops += 2.0 * a[0] * a[1] * b[1] * r.count
                secs += r.self_cpu_time_total / 1e6
        out[f"{tag}_gemm_s"], out[f"{tag}_gemm_gflop"] = round(secs, 4), round(flops / 1e9, 6)
    _set_reference(model, False)
    out["gemm_s"] = min(out["ours_gemm_s"], out["baseline_gemm_s"])  # the same calls: the faster run
    out["gemm_gflop_per_s"] = round(out["ours_gemm_gflop"] / max(out["gemm_s"], 1e-9), 1)
    return out


def _set_reference(model, on: bool):
    from ..nn import attention

    attention.IMPL = "reference" if on else "sdpa"
    for m in model.modules():
        if hasattr(m, "algo"):
            m.algo = "reference" if on else "auto"


def _runner(model, point, device, train):
    from ..data.point import Point

    def run_eval():
        with torch.no_grad():
            out = model(Point(point), upcast=True).feat
        if device == "cuda":
            torch.cuda.synchronize()
        return out

    def run_train():
        model.zero_grad(set_to_none=True)
        out = model(Point(point), upcast=True).feat
        out.float().square().mean().backward()
        if device == "cuda":
            torch.cuda.synchronize()
        return out.detach()

    return run_train if train else run_eval


def _compare(model, point, reps, device, train, baseline):
    """Interleaved timing (ours, baseline, ours, baseline, ...) so that load changes on a shared machine
    hit both alike. Returns dict of min/median times, outputs, peak memory of our path."""
    fn = _runner(model, point, device, train)
    model.train(train)
    res = {"ours": [], "base": []}
    _set_reference(model, False)
    fn()  # warm-up
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    with _PeakRSS() as mem:
        out = fn()
    gpu = torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else None
    out_base = None
    if baseline:
        _set_reference(model, True)
        out_base = fn()  # warm-up
    for _ in range(reps):
        for which in (("ours", "base") if baseline else ("ours",)):
            _set_reference(model, which == "base")
            t = time.perf_counter()
            fn()
            res[which].append(time.perf_counter() - t)
    _set_reference(model, False)
    return res, out, out_base, mem, gpu


def run(points=None, quick: bool = False, device: str = "cpu", presets=("panda-base",), train: bool = True,
        baseline: bool = True, tiles=None, reps=None, on_row=None, batch: int = 1, gemm: bool = False) -> list[dict]:
    """One dict per (preset, input): eval time ours/baseline, ratio, max |diff|, peak memory, train time.
    ``batch``: each input as that many events of one batch; ``gemm`` (CPU): add `gemm_account` and
    ``eval_floor_ratio`` = our shared-GEMM time / the baseline's eval time, the lowest eval ratio
    reachable without fewer or faster GEMMs."""
    from ..io import build_model

    if device == "cpu" and "LARPANDA_BENCH_THREADS" in os.environ:
        torch.set_num_threads(int(os.environ["LARPANDA_BENCH_THREADS"]))
    ks = tiles if tiles is not None else ((1, 3) if quick else (1, 3, 9, 27))
    inputs = [(f"fixture_x{k}", tiled_fixture(k)) for k in ks]
    sims = points if points is not None else ([] if quick else [3000, 10000])
    inputs += [(f"simulated_{p}", simulated(p)) for p in sims]
    if batch > 1:
        inputs = [(f"{name}_batch{batch}", batched(p, batch)) for name, p in inputs]
    reps = reps if reps is not None else (1 if quick else 3)
    rows = []
    for preset in presets:
        torch.manual_seed(0)
        model = build_model(preset).to(device)
        for name, point in inputs:
            point = point.to(device)
            row = {"preset": preset, "input": name, "voxels": int(point.coord.shape[0]), "device": device,
                   "threads": torch.get_num_threads(), "reps": reps}
            modes = (False, True) if train else (False,)
            for tr in modes:
                tag = "train" if tr else "eval"
                r, out, outb, mem, gpu = _compare(model, point, reps if not tr else max(1, reps - 1), device, tr, baseline)
                row[f"{tag}_s"] = round(min(r["ours"]), 4)
                row[f"{tag}_median_s"] = round(statistics.median(r["ours"]), 4)
                row[f"{tag}_peak_rss_mb"] = round(mem.peak)
                row[f"{tag}_extra_rss_mb"] = round(mem.peak - mem.base)
                if gpu is not None:
                    row[f"{tag}_gpu_peak_mb"] = round(gpu)
                if baseline:
                    row[f"baseline_{tag}_s"] = round(min(r["base"]), 4)
                    row[f"baseline_{tag}_median_s"] = round(statistics.median(r["base"]), 4)
                    row[f"{tag}_speedup"] = round(min(r["base"]) / min(r["ours"]), 2)
                    row[f"{tag}_speedup_median"] = round(statistics.median(r["base"]) / statistics.median(r["ours"]), 2)
                    if not tr:
                        row["max_abs_diff"] = float((out - outb).abs().max())
                if gemm and not tr and device == "cpu":
                    row.update(gemm_account(model, point))
                    if baseline:
                        row["eval_floor_ratio"] = round(row["gemm_s"] / row["baseline_eval_s"], 3)
            model.eval()
            rows.append(row)
            if on_row is not None:
                on_row(row)
    return rows
