"""Inference memory guard (docs/design.md §2.3): estimate one event's peak inference memory before the
forward pass and refuse, with a clear message naming the limit, an event that would not fit.

Every inference entry point calls `check_model` on the prepared input (after the energy cut, before the
forward pass): `larpanda.io.Backbone.embed`, ``SemanticModel.predict``/``embed``,
``PanopticModel.predict``/``embed`` and the evaluation batches of both tasks
(`tasks.common.iterate_batches`), hence ``larpanda predict``, ``evaluate`` and ``embed``.

Estimate (bytes above what the process holds before the call, i.e. above the loaded weights)::

    est = c0 + c1 * sum_s N_s + c2 * sum_s N_s * C_s + c3 * N_0 * W_out + c4 * N_0 * (D + H * Q)

``N_s`` = points at stage s (stage 0 = points after the energy cut; stage s = distinct cells of the grid
coordinates floored by the cumulative pooling stride, counted exactly here, so dense tracks and showers
that pool well cost less than scattered voxels), ``C_s`` = the stage's channels (encoder stages, plus
the decoder stages when the model has one), ``W_out`` = width of the per-point output (sum of
enc_channels for the up-cast encoder, dec_channels[0] with a decoder); for panoptic models D, H, Q = the
mask decoder's hidden width, heads and queries. The UResNet baseline uses the first three terms with its
own constants. The constants are fitted to the peak resident memory (VmHWM above the pre-call RSS,
allocator overhead included) of CPU eval/no-grad runs of the presets at several sizes, on scattered and
on track-like events, as the tightest upper envelope of the measurements times a margin::

    python benchmarks/bench_inference_memory.py --out mem.jsonl      # measure (one subprocess per case)
    python benchmarks/bench_inference_memory.py --fit mem.jsonl      # fit; prints the constants below

(docs/benchmarks.md "Large inputs" has the table). On CUDA the same bytes are compared with the device's
free memory; the constants were not measured on a GPU.

Limits (`set_limits`, CLI ``--max-memory-gb`` / ``--max-points``): the memory limit defaults to
``DEFAULT_FRACTION`` of the memory available when it is first needed (MemAvailable in /proc/meminfo, or
the cgroup's remaining allowance if smaller; the free memory of the CUDA device), read once per process
and device. An event above a limit raises `InferenceMemoryError` (a `DataError`: ``larpanda: error: FILE
event K: ...``, exit 2); ``--skip-bad-events`` skips it with a warning and counts it instead.
"""

from __future__ import annotations

import logging
import math
import os

import numpy as np

from ..errors import DataError, UserError

# Fitted by ``python benchmarks/bench_inference_memory.py --fit benchmarks/inference_memory.jsonl`` (margin
# 1.15) to the 38 runs in that file (measured with ``--out``: the default cases, 8 repeats, and 3 runs at
# 200k points; 2 torch threads, shared 2-core machine). Bytes. PTv3: (constant, per point per stage, per
# point per stage channel, per point per output column, per point per head unit); UResNet: (constant, per
# point per level, per point per level channel). Every run's peak is 0.52-0.87 of its estimate.
PTV3_COEFFS = (3.613e05, 395.9, 44.81, 8.478, 7.553)
URESNET_COEFFS = (1.401e07, 68.12, 9.501)

DEFAULT_FRACTION = 0.8
log = logging.getLogger("larpanda.data")  # skips are logged like the Dataset's bad-event skips
GB = 1e9


class InferenceMemoryError(DataError):
    """An event whose estimated inference memory (or point count) is above the configured limit."""


_limits = {"max_memory_gb": None, "max_points": None}
_auto_bytes: dict = {}  # device kind -> default limit in bytes (read once)


def set_limits(max_memory_gb: float | None = None, max_points: int | None = None) -> dict:
    """Set the process-wide inference limits; returns the previous ones (a dict for `set_limits(**old)`).

    ``max_memory_gb`` None: ``DEFAULT_FRACTION`` of the available memory; ``math.inf``: no memory check.
    ``max_points`` None: no cap on points after the energy cut."""
    if max_memory_gb is not None and not max_memory_gb > 0:
        raise UserError(f"--max-memory-gb must be positive, got {max_memory_gb}")
    if max_points is not None and int(max_points) < 1:
        raise UserError(f"--max-points must be at least 1, got {max_points}")
    old = dict(_limits)
    _limits.update(max_memory_gb=None if max_memory_gb is None else float(max_memory_gb),
                   max_points=None if max_points is None else int(max_points))
    return old


def _read_int(path) -> int | None:
    try:
        with open(path) as f:
            text = f.read().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def available_bytes(device: str = "cpu") -> int | None:
    """Memory a new allocation can use now: CUDA free memory, or min(MemAvailable, cgroup limit − usage)."""
    if str(device).startswith("cuda"):
        import torch

        return int(torch.cuda.mem_get_info(torch.device(device))[0])
    avail = None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    avail = int(line.split()[1]) * 1024
    except OSError:
        pass
    if avail is None:
        try:
            avail = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            return None
    for lim, used in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                      ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        cap, cur = _read_int(lim), _read_int(used)
        if cap is not None and cur is not None and cap < 1 << 60:
            avail = min(avail, max(cap - cur, 0))
    return avail


def limit_bytes(device: str = "cpu") -> tuple[float, str]:
    """(limit in bytes, how it was set) for inference on ``device``."""
    if _limits["max_memory_gb"] is not None:
        return _limits["max_memory_gb"] * GB, "--max-memory-gb"
    kind = "cuda" if str(device).startswith("cuda") else "cpu"
    if kind not in _auto_bytes:
        avail = available_bytes(device)
        _auto_bytes[kind] = math.inf if avail is None else DEFAULT_FRACTION * avail
    pct = f"{DEFAULT_FRACTION:.0%}"
    return _auto_bytes[kind], f"default: {pct} of the memory available at start; set --max-memory-gb"


# ------------------------------------------------------------------------------------ architecture


def _stage_channels(bb: dict, with_decoder: bool) -> tuple[list, list, int]:
    """(cumulative strides per stage, channels per stage (encoder, then decoder), output width)."""
    from ..nn.ptv3 import OFFICIAL_DEFAULTS

    kw = {**OFFICIAL_DEFAULTS, **{k: v for k, v in bb.items() if k in OFFICIAL_DEFAULTS}}
    enc = [int(c) for c in kw["enc_channels"]]
    strides = [1]
    for st in kw["stride"]:
        strides.append(strides[-1] * int(st))
    if not with_decoder:
        return strides, enc, sum(enc)
    dec = [int(c) for c in kw["dec_channels"]]
    return strides, enc + dec, dec[0]


def architecture(config: dict) -> dict:
    """What the estimate needs from a weights ``config`` (``model.config``): ``strides`` (cumulative, one per
    stage), ``stages`` list of (stage index, channels) to sum over, ``out_width``, ``head`` (D + H·Q, 0 without
    a mask decoder) and ``kind`` ("ptv3" or "uresnet")."""
    task = config.get("task", "backbone")
    bb = config.get("backbone") or {}
    if task == "semantic" and config.get("mode") == "uresnet":
        u = config.get("uresnet") or {}
        depth, filters = int(u.get("depth", 5)), int(u.get("filters", 32))
        strides = [2 ** level for level in range(depth)]
        stages = [(level, filters * (level + 1)) for level in range(depth)] * 2  # encoder, then decoder
        return {"kind": "uresnet", "strides": strides, "stages": stages, "out_width": filters, "head": 0}
    enc_mode = bool(bb.get("enc_mode", True)) if task != "panoptic" else True
    strides, chans, out_width = _stage_channels(bb, with_decoder=not enc_mode)
    n_enc = len(strides)
    stages = [(s, c) for s, c in zip(range(n_enc), chans[:n_enc])]
    stages += [(s, c) for s, c in zip(range(n_enc - 1), chans[n_enc:])]  # decoder stage s has N_s points
    head = 0
    if task == "panoptic":
        dk = config.get("decoder") or {}
        head = int(dk.get("hidden_channels", 256)) + int(dk.get("num_heads", 16)) * int(dk.get("num_queries", 32))
    return {"kind": "ptv3", "strides": strides, "stages": stages, "out_width": out_width, "head": head}


def stage_counts(grid_coord, offset, strides) -> list[int]:
    """Points per stage for a (possibly batched) input: distinct (event, grid // stride) cells per stride.

    grid_coord (N, 3) non-negative ints, offset (B,) cumulative counts; returns one int per stride (the
    first stride is 1: N itself when GridSample made the cells unique)."""
    g = np.asarray(grid_coord, dtype=np.int64)
    off = np.asarray(offset, dtype=np.int64).reshape(-1)
    if g.shape[0] == 0:
        return [0 for _ in strides]
    batch = np.repeat(np.arange(len(off)), np.diff(off, prepend=0))
    out = []
    for st in strides:
        c = g // int(st)
        size = int(c.max()) + 1
        key = np.sort(((batch * size + c[:, 0]) * size + c[:, 1]) * size + c[:, 2])
        out.append(1 + int(np.count_nonzero(np.diff(key))))  # sort + diff: far faster than np.unique here
    return out


def terms(arch: dict, counts) -> np.ndarray:
    """Feature vector of the linear estimate: [1, Σ N_s, Σ N_s C_s, N_0 W_out, N_0 head] (ptv3) or
    [1, Σ N_s, Σ N_s C_s] (uresnet)."""
    n = [float(c) for c in counts]
    pts = sum(n[s] for s, _ in arch["stages"])
    pts_ch = sum(n[s] * c for s, c in arch["stages"])
    if arch["kind"] == "uresnet":
        return np.array([1.0, pts, pts_ch])
    return np.array([1.0, pts, pts_ch, n[0] * arch["out_width"], n[0] * arch["head"]])


def coefficients(kind: str) -> np.ndarray:
    return np.array(URESNET_COEFFS if kind == "uresnet" else PTV3_COEFFS, dtype=float)


def estimate_bytes(config: dict, counts) -> float:
    """Estimated peak inference memory (bytes above the pre-call RSS) of ``config`` on an input with
    ``counts`` points per stage (`stage_counts`; a single int means N at every stage, the worst case)."""
    arch = architecture(config)
    if np.ndim(counts) == 0:
        counts = [int(counts)] * len(arch["strides"])
    return float(terms(arch, counts) @ coefficients(arch["kind"]))


def describe(config: dict) -> str:
    """A short model name for messages, e.g. ``panda-base semantic (linear)``, ``tiny backbone``."""
    from ..config import list_presets, load_config

    task = config.get("task", "backbone")
    if task == "semantic" and config.get("mode") == "uresnet":
        u = config.get("uresnet") or {}
        return f"UResNet (depth {u.get('depth', 5)}, filters {u.get('filters', 32)}) semantic"
    bb = config.get("backbone") or {}
    name = "PTv3 (enc_channels " + "-".join(str(c) for c in bb.get("enc_channels", ())) + ")"
    for preset in list_presets("model"):
        p = load_config(preset, "model")
        if all(list(p[k]) == list(bb.get(k, ())) for k in ("enc_depths", "enc_channels", "enc_patch_size")):
            name = preset
            break
    if task == "semantic":
        return f"{name} semantic ({config.get('mode')})"
    if task == "panoptic":
        return f"{name} panoptic ({config.get('level', 'particle')})"
    return f"{name} backbone"


def _gb(x: float) -> str:
    return f"{x / GB:.2f}" if x < 10 * GB else f"{x / GB:.1f}"


def check_inference(config: dict, inputs, device: str = "cpu", source=None) -> float:
    """Refuse an input before the forward pass if it is above the limits; return its estimate (bytes).

    ``inputs``: a prepared event or collated batch (dict/`Point` with ``grid_coord`` and ``offset``);
    ``source``: (file, event index) named in the error (``Event.source``). Raises `InferenceMemoryError`."""
    u = config.get("uresnet") or {}
    lattice = "voxel_coord" if u.get("voxel_grid") and "voxel_coord" in inputs else "grid_coord"  # what it convolves on
    grid, offset = inputs[lattice], inputs["offset"]
    grid = grid.cpu().numpy() if hasattr(grid, "cpu") else np.asarray(grid)
    offset = offset.cpu().numpy() if hasattr(offset, "cpu") else np.asarray(offset)
    n = int(grid.shape[0])
    path, event = None, None
    if isinstance(source, (tuple, list)) and len(source) == 2:  # (file, event index) from the readers
        path, event = source
    elif source is not None:  # e.g. the simulator's ("sim", seed, index)
        path = " ".join(str(x) for x in source) if isinstance(source, (tuple, list)) else str(source)
    if _limits["max_points"] is not None and n > _limits["max_points"]:
        raise InferenceMemoryError(
            f"{n:,} points above the energy cut, above the limit of {_limits['max_points']:,} points "
            f"(--max-points); raise --max-points or pass --skip-bad-events to skip such events", path=path, event=event)
    limit, how = limit_bytes(device)
    arch = architecture(config)
    worst = float(terms(arch, [n] * len(arch["strides"])) @ coefficients(arch["kind"]))
    if worst <= limit:  # fits even if no point pooled with another: skip counting cells
        return worst
    est = float(terms(arch, stage_counts(grid, offset, arch["strides"])) @ coefficients(arch["kind"]))
    if est > limit:
        raise InferenceMemoryError(
            f"{n:,} points above the energy cut need ~{_gb(est)} GB for {describe(config)} inference, above the "
            f"limit of {_gb(limit)} GB ({how}); raise --max-memory-gb if the machine has the memory, use a "
            f"smaller model, or pass --skip-bad-events to skip such events", path=path, event=event)
    return est


def check_model(model, inputs, source=None) -> float:
    """`check_inference` with the model's ``config`` and parameter device."""
    try:
        device = str(next(model.parameters()).device)
    except StopIteration:
        device = "cpu"
    return check_inference(model.config, inputs, device=device, source=source)

