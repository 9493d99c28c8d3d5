"""Measurements of `gpu_check.py`: predict throughput per batch size, the semantic forward's profile and
module shares, and the pretraining step per batch size. Every function takes the check's ``Context``
(device, settings, simulated events and their batches) and returns JSON-ready dicts; times in seconds
unless a key says ``_ms``, memory in GB (decimal) of device memory or MB of host RSS."""

from __future__ import annotations

import gc
import itertools
import statistics
import time
import traceback

import numpy as np
import torch
from gpu_check_report import rss_mb

# The Panda slides' A100 numbers and the acceptance targets on one H200.
ANCHORS = {"semantic": {"ms_per_event": 8.3, "events_per_s": 120, "peak_gb": 1.75},
           "panoptic": {"ms_per_event": 34.5, "events_per_s": 29, "peak_gb": 20.0},
           "pretrain": {"batch": 12, "step_s": 0.895, "peak_gb": 34.3}}
TARGETS = {"semantic": 240, "panoptic": 60}  # events/s on one H200


def is_oom(exc: BaseException) -> bool:
    return isinstance(exc, torch.cuda.OutOfMemoryError) or "out of memory" in str(exc).lower()


def free_memory(ctx):
    gc.collect()
    if ctx.device.type == "cuda":
        torch.cuda.empty_cache()


def build_model(ctx, task: str):
    """Random-weight models from the model preset: ``embed`` (backbone), ``semantic`` (decoder mode),
    ``panoptic`` (particle level, decoder mode), built directly on the device, in eval mode."""
    from larpanda.config import load_config
    from larpanda.io import build_model as build_backbone
    from larpanda.tasks.panoptic import PanopticModel
    from larpanda.tasks.semantic import SemanticModel

    bb = load_config(ctx.cfg["preset"], "model")
    make = {"embed": lambda: build_backbone(bb), "semantic": lambda: SemanticModel("decoder", backbone=bb),
            "panoptic": lambda: PanopticModel(bb, level="particle", mode="decoder")}[task]
    torch.manual_seed(0)
    with torch.device(ctx.device):
        model = make()
    return model.to(ctx.device).eval()


def predict_fn(ctx, task: str, model, bf16: bool):
    """One call = the predict path of a host batch: to the device, forward, outputs back on the host.
    Panoptic post-processing runs with conf_threshold 0 so that every candidate mask is painted (random
    weights would keep none at 0.5; this is the upper end of its work)."""
    dev = ctx.device
    info = {}

    def run(batch):
        with torch.no_grad(), torch.autocast(dev.type, dtype=torch.bfloat16, enabled=bf16):
            p = batch.to(dev)
            if task == "embed":
                return model(p, upcast=True).feat.float().cpu()
            if task == "semantic":
                z = model(p).float().cpu()  # as SemanticModel.predict: softmax and argmax on the host
                return torch.softmax(z, 1).argmax(1)
            res = model.infer(p, conf_threshold=0.0)
            info["instances_per_event"] = float(np.mean([max(int(r["instance"].max()), 0) for r in res]))
            return res

    return run, info


def measure(ctx, fn, arg, reps=None) -> dict:
    """Warm-up calls, then timed calls (until ``min_time_s`` or ``reps``); peak memory over all of them."""
    ctx.reset_peak()
    for _ in range(ctx.cfg["warmup"]):
        fn(arg)
    ctx.sync()
    times = []
    while len(times) < (reps or ctx.cfg["reps"]) and (not times or sum(times) < ctx.cfg["min_time_s"]):
        t = time.perf_counter()
        fn(arg)
        ctx.sync()
        times.append(time.perf_counter() - t)
    return {"reps": len(times), "median_s": statistics.median(times), "min_s": min(times), "peak_gb": ctx.peak_gb(),
            "rss_mb": rss_mb() if ctx.device.type == "cpu" else None}


def batch_search(ctx, task: str, model, bf16: bool, deadline: float) -> list[dict]:
    """Rows for batch 1, 2, 4, ...: stop at out-of-memory, at no gain (< 3 % more events/s) or when the next
    batch would end past ``deadline`` (the first batch always runs)."""
    fn, info = predict_fn(ctx, task, model, bf16)
    rows, best, last_cost = [], 0.0, 0.0
    for b in ctx.cfg["batches"]:
        row = {"task": task, "dtype": "bf16" if bf16 else "fp32", "batch": b}
        if rows and time.perf_counter() + 2.5 * last_cost > deadline:  # batch 1 always runs
            rows.append({**row, "stopped": "budget"})
            break
        t0 = time.perf_counter()
        try:
            m = measure(ctx, fn, ctx.batch(b))
        except Exception as exc:
            if not is_oom(exc):
                raise
            m = None
        if m is None:
            free_memory(ctx)
            rows.append({**row, "stopped": "out of memory"})
            break
        last_cost = time.perf_counter() - t0
        eps = b / m["median_s"]
        rows.append({**row, "points": int(ctx.batch(b)["offset"][-1]), "events_per_s": round(eps, 2),
                     "ms_per_event": round(1000 / eps, 3), **m, **info})
        if eps < 1.03 * best:
            rows[-1]["stopped"] = "no gain"
            break
        best = max(best, eps)
    return rows


def sec_throughput(ctx, deadline: float) -> dict:
    """`batch_search` rows of every (task, dtype), each pair with an equal share of the time left, and per
    task the batch-1 and best numbers beside the A100 anchor and the H200 target."""
    rows, summary = [], {}
    full_gpu = ctx.device.type == "cuda" and ctx.cfg["preset"] == "panda-base"  # targets are for panda-base on a GPU
    pairs = [(t, bf) for t in ("semantic", "panoptic", "embed") for bf in (False, True)]
    model, model_task = None, None
    for i, (task, bf16) in enumerate(pairs):
        share = (deadline - time.perf_counter()) / (len(pairs) - i)  # left-over time rolls forward
        try:  # an error ends this (task, dtype) only; the others still run
            if model_task != task:
                model, model_task = None, None
                free_memory(ctx)
                model, model_task = build_model(ctx, task), task
            rows += batch_search(ctx, task, model, bf16, time.perf_counter() + share)
        except Exception as exc:
            rows.append({"task": task, "dtype": "bf16" if bf16 else "fp32", "error": f"{type(exc).__name__}: {exc}"[:1000],
                         "traceback": traceback.format_exc()[-2000:]})
    if not any("events_per_s" in r for r in rows):
        raise RuntimeError("no throughput measured: " + "; ".join(r.get("error", "") for r in rows)[:1500])
    for task in ("semantic", "panoptic", "embed"):
        ok = [r for r in rows if r["task"] == task and "events_per_s" in r]
        if not ok:
            continue
        best, one = max(ok, key=lambda r: r["events_per_s"]), [r for r in ok if r["batch"] == 1]
        s = {"best": {k: best[k] for k in ("dtype", "batch", "events_per_s", "ms_per_event", "peak_gb")},
             "batch1": {r["dtype"]: {k: r[k] for k in ("events_per_s", "ms_per_event", "peak_gb")} for r in one}}
        if task in TARGETS:
            s.update(anchor_a100=ANCHORS[task], target_events_per_s=TARGETS[task],
                     meets_target=best["events_per_s"] >= TARGETS[task] if full_gpu else None)
        summary[task] = s
    ev = ctx.events
    return {"preset": ctx.cfg["preset"], "events_in_pool": len(ev), "weights": "random (throughput only)",
            "mean_points_after_cut": round(float(np.mean([int((e.energy > 0.13).sum()) for e in ev])), 1),
            "summary": summary, "rows": rows}


def module_shares(ctx, model, fn, batch) -> dict:
    """Time inside SubMConv3d (kernel map included) and SerializedAttention modules as shares of the
    forward (device timeline: CUDA events around each call; host clock on CPU). Two forwards."""
    from larpanda.nn.attention import SerializedAttention
    from larpanda.nn.sparse_conv import SubMConv3d

    cuda = ctx.device.type == "cuda"
    spans, handles = {"sparse_conv": [], "attention": []}, []

    def mark():
        if not cuda:
            return time.perf_counter()
        e = torch.cuda.Event(enable_timing=True)
        e.record()
        return e

    for kind, cls in (("sparse_conv", SubMConv3d), ("attention", SerializedAttention)):
        for mod in model.modules():
            if isinstance(mod, cls):
                handles.append(mod.register_forward_pre_hook(lambda m, a: setattr(m, "_gc_t0", mark())))
                handles.append(mod.register_forward_hook(lambda m, a, o, k=kind: spans[k].append((m._gc_t0, mark()))))
    try:
        start = mark()
        for _ in range(2):
            fn(batch)
        end = mark()
        ctx.sync()
    finally:
        for h in handles:
            h.remove()
    ms = (lambda a, b: a.elapsed_time(b)) if cuda else (lambda a, b: 1000 * (b - a))
    total = ms(start, end) / 2
    out = {"forward_ms": round(total, 3)}
    for k, v in spans.items():
        t = sum(ms(a, b) for a, b in v) / 2
        out[f"{k}_ms"], out[f"{k}_share"], out[f"{k}_calls"] = round(t, 3), round(t / total, 4), len(v) // 2
    return out


def top_ops(prof, cuda: bool, n: int = 15) -> tuple[list[dict], str]:
    """The ``n`` ops with the largest self device time (self CPU time on CPU or when none was recorded)."""
    avgs = list(prof.key_averages())

    def dev(e):  # self_cuda_time_total before torch 2.4
        t = getattr(e, "self_device_time_total", None)
        return (t if t is not None else getattr(e, "self_cuda_time_total", 0)) or 0

    key, clock = (dev, "device") if cuda and sum(dev(e) for e in avgs) > 0 else ((lambda e: e.self_cpu_time_total), "cpu")
    total = sum(key(e) for e in avgs) or 1
    rows = [{"op": e.key[:80], "calls": e.count, "self_ms": round(key(e) / 1000, 3), "share": round(key(e) / total, 4)}
            for e in sorted(avgs, key=key, reverse=True)[:n]]
    return rows, clock


def sec_profile(ctx, deadline: float) -> dict:
    """torch.profiler table of the semantic predict forward at batch 8 (2 quick) and the module shares."""
    from torch.profiler import ProfilerActivity, profile

    b = ctx.cfg["profile_batch"]
    model = build_model(ctx, "semantic")
    batch = ctx.batch(b)
    res = {"task": "semantic", "batch": b, "preset": ctx.cfg["preset"], "points": int(batch["offset"][-1])}
    for bf16 in (False, True):
        fn = predict_fn(ctx, "semantic", model, bf16)[0]
        fn(batch)  # warm-up
        res["shares_bf16" if bf16 else "shares_fp32"] = module_shares(ctx, model, fn, batch)
    fn = predict_fn(ctx, "semantic", model, False)[0]
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if ctx.device.type == "cuda" else [])
    with profile(activities=acts) as prof:
        for _ in range(2):
            fn(batch)
        ctx.sync()
    res["top_ops"], res["clock"] = top_ops(prof, ctx.device.type == "cuda")
    res["sparse_conv_share"] = res["shares_fp32"]["sparse_conv_share"]
    return res


class PretrainRig:
    """The pretraining task, optimizer, schedules and counters as `larpanda.train.fit` builds them, and
    `run`: steps of the real training step (`larpanda.train.trainer.optimizer_step`) at one batch size."""

    def __init__(self, ctx):
        from larpanda.commands.pretrain import build_task
        from larpanda.config import load_config
        from larpanda.ssl import SSLTransform
        from larpanda.train import trainer as T

        self.ctx, self.T, self.step, total = ctx, T, 0, 10_000
        self.cfg = load_config(ctx.cfg["pretrain_config"], "pretrain")
        self.tcfg = T.train_section(self.cfg)
        torch.manual_seed(0)
        with torch.device(ctx.device):
            self.task = build_task(self.cfg)
        self.task.to(ctx.device).setup(total)
        self.optimizer, self.sched = T._optimizer(self.task, self.tcfg), T._Schedules(self.tcfg, total)
        half = str(self.tcfg["amp"]).lower() in ("fp16", "float16", "half")
        self.scaler = torch.amp.GradScaler("cuda", enabled=ctx.device.type == "cuda" and half)
        self.counters = {"step": 0, "micro": 0, "nonfinite_total": 0, "nonfinite_run": 0, "amp_skipped": 0, "total": total}
        self.transform = SSLTransform(**(self.cfg.get("views") or {}))
        self.task.train()

    def run(self, b: int, timed: int) -> dict:
        """One warm-up step and ``timed`` timed steps at batch ``b`` (the same views every step): a row with
        the median ``step_s``, events/s, peak memory, loss and points per step, or ``stopped`` on OOM."""
        from larpanda.ssl.views import collate_views

        ctx, ev = self.ctx, self.ctx.events
        thr = (self.cfg.get("data") or {}).get("energy_threshold", 0.13)
        views = collate_views([self.transform(ev[i % len(ev)], thr, rng=np.random.default_rng([5, i])) for i in range(b)])
        stream, times, rec, oom = itertools.repeat((0, views)), [], {}, False
        ctx.reset_peak()
        try:
            for _ in range(1 + timed):
                self.sched.apply(self.optimizer, self.step)
                t = time.perf_counter()
                rec = self.T.optimizer_step(self.task, self.optimizer, self.scaler, stream, self.step, self.tcfg,
                                            ctx.device, self.counters)
                ctx.sync()
                self.step += 1
                times.append(time.perf_counter() - t)
        except Exception as exc:
            if not is_oom(exc):
                raise
            oom = True
        if oom:
            self.optimizer.zero_grad(set_to_none=True)
            free_memory(ctx)
            return {"batch": b, "stopped": "out of memory"}
        s = statistics.median(times[1:])
        return {"batch": b, "step_s": round(s, 4), "timed_steps": timed, "events_per_s": round(b / s, 2),
                "peak_gb": ctx.peak_gb(), "rss_mb": rss_mb() if ctx.device.type == "cpu" else None,
                "loss": rec.get("loss"), "points_per_step": int(views["global_offset"][-1]) + int(views["local_offset"][-1])}


def next_batch(tried: dict, first: int, cap: int):
    """Next batch of the search (``tried``: batch -> fitted): ``first``, then doubling up to ``cap`` until one
    runs out of memory, then bisection between the largest that fits and the smallest that does not,
    down to a gap of 1/8 of the former; None when done."""
    fits, fails = [b for b, ok in tried.items() if ok], [b for b, ok in tried.items() if not ok]
    if not tried:
        return first
    if not fits:
        return None
    lo = max(fits)
    if not fails:
        return 2 * lo if 2 * lo <= cap else None
    hi = min(fails)
    return (lo + hi) // 2 if hi - lo > max(1, lo // 8) else None


def sec_pretrain(ctx, deadline: float) -> dict:
    """Step time (forward + backward + AdamW) and peak memory at the preset's batch (12; 2 quick, with
    ``pretrain_steps`` timed steps), then the largest batch that fits (`next_batch`; one timed step each)
    within the budget."""
    rig = PretrainRig(ctx)
    first, cap = ctx.cfg["pretrain_batch"], ctx.cfg["pretrain_max_batch"]
    tried, rows, stopped, s_per_event = {}, [], None, 0.0
    while (b := next_batch(tried, first, cap)) is not None:
        timed = ctx.cfg["pretrain_steps"] if not rows else 1
        if rows and time.perf_counter() + (1 + timed) * s_per_event * b > deadline:
            stopped = "budget"
            break
        rows.append(rig.run(b, timed))
        tried[b] = "step_s" in rows[-1]
        if tried[b]:
            s_per_event = max(s_per_event, rows[-1]["step_s"] / b)
    fits, fails = [b for b, ok in tried.items() if ok], [b for b, ok in tried.items() if not ok]
    stopped = stopped or ("out of memory" if fails else "cap")
    return {"config": ctx.cfg["pretrain_config"], "amp": rig.tcfg["amp"] if ctx.device.type == "cuda" else False,
            "anchor_a100": ANCHORS["pretrain"], "rows": rows, "largest_batch_fitting": max(fits) if fits else None,
            "smallest_batch_oom": min(fails) if fails else None, "stopped": stopped,
            "largest_is_lower_bound": stopped != "out of memory"}
