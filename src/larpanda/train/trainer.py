"""The one training loop shared by pretraining and the downstream tasks: ``fit(task, dataset, cfg, out)``.

A *task* is an ``nn.Module`` with

- ``training_step(batch: Point, step: int) -> (loss, logs: dict[str, float])`` (required);
- ``param_groups(cfg) -> list[dict]`` (optional; default: ``optim.param_groups`` with layer decay);
- ``setup(total_steps)`` (optional; called once before training, e.g. to precompute SSL schedules);
- ``on_step_end(step, total_steps)`` (optional; after each applied optimizer update, e.g. EMA);
- ``collate_fn`` (optional attribute; default ``larpanda.data.point.collate``).

Per optimizer step t (0-based, `optimizer_step`): set lr/β1/wd from precomputed arrays → ``accum_steps``
micro-batches (autocast on CUDA) → if any loss is non-finite on any rank: no update, count, stop with
``NumericalError`` after ``max_nonfinite`` in a row → average grads over ranks → unscale, clip → AdamW step
(fp16 overflow steps skipped by the GradScaler and counted) → ``on_step_end``.

Validation (``eval_fn(task, val_dataset) -> dict``) runs every ``eval_every`` steps and at the end. With
``select_metric`` the model of the best evaluation is kept in ``checkpoints/best.pt`` and loaded back into
the task when training ends; with ``ema_decay`` it is the moving average of the weights
(`larpanda.train.ema`) that is validated, kept and returned; with ``patience`` training stops after that
many evaluations in a row without improvement. The data stream (`larpanda.train.data`), checkpoints (`larpanda.train.checkpoint`) and the log
(`larpanda.train.runlog`) make a resumed run identical to an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import math
import os
import random
import signal
import sys
import threading
import time
from pathlib import Path

import numpy as np
import torch

from ..errors import NumericalError, UserError
from . import distributed as D
from . import optim as O
from . import schedules as S
from .checkpoint import Checkpointer, load_checkpoint, save_checkpoint
from .data import batch_stream, num_events, to_device
from .ema import WeightEMA
from .runlog import RunLog

__all__ = ["fit", "load_checkpoint", "save_checkpoint", "train_section", "DEFAULTS"]

DEFAULTS = {
    "epochs": None,
    "max_steps": None,  # the run's length; with epochs: the cap of the epochs' steps
    "min_steps": None,  # with epochs: the floor of the epochs' steps (tiny labelled sets)
    "batch_size": 4,  # per process (the paper's "12 per GPU")
    "lr": 1e-3,
    "weight_decay": 0.04,
    "weight_decay_end": None,  # cosine wd schedule when set (0.04 → 0.2 in pretraining)
    "layer_decay": 1.0,
    "backbone_lr_mult": 1.0,  # task fine-tuning: extra lr multiplier of the pretrained encoder blocks
    "pct_start": 0.05,
    "div_factor": 10.0,
    "final_div_factor": 1000.0,
    "cycle_momentum": True,
    "grad_clip": None,
    "accum_steps": 1,
    "amp": False,  # false | "bf16" | "fp16" (CUDA; on CPU only with amp_cpu)
    "amp_cpu": False,  # also autocast on CPU with amp "bf16": true | false | "auto" (when the CPU has native bf16)
    "seed": 0,
    "log_every": 10,
    "ckpt_every": 100,
    "ckpt_keep_every": 0,  # also keep checkpoints/step_<k>.pt every k steps (0: never)
    "eval_every": 0,  # 0: evaluate at the end only
    "select_metric": None,  # a validation key to maximize (e.g. "mIoU"): keep checkpoints/best.pt, restore it at the end
    "patience": 0,  # stop after this many evaluations in a row without a better select_metric (0: never)
    "num_workers": 0,
    "shuffle": True,
    "max_nonfinite": 5,
    "ema_decay": 0.0,  # > 0: validate, keep and return the moving average of the weights (train/ema.py); 0: off
    "deterministic": False,
    "progress": None,  # None: on when stderr is a TTY
    "tensorboard": False,
    "device": "auto",
}


def train_section(cfg: dict) -> dict:
    """The ``train:`` section of a full config (or ``cfg`` itself), with defaults filled in."""
    sec = cfg.get("train") if isinstance(cfg.get("train"), dict) else cfg
    unknown = [k for k in sec if k not in DEFAULTS and not isinstance(sec[k], dict)]
    out = {**DEFAULTS, **{k: v for k, v in sec.items() if k in DEFAULTS}}
    out["_unknown"] = unknown
    return out


def seed_all(seed: int) -> None:
    """Seed python, numpy and torch. The commands call it before they build a model: torch starts every
    process from a random seed, so a model built unseeded had a different initialisation in every run."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _device(tcfg) -> torch.device:
    d = tcfg["device"]
    if d in (None, "auto"):
        if torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        return torch.device("cpu")
    return torch.device(d)


def cpu_bf16_supported() -> bool:
    """True when this CPU has native bf16 matrix instructions (AVX512-BF16/AMX; oneDNN's check)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except Exception:  # pragma: no cover - builds without oneDNN
        return False


def _autocast(device, amp, amp_cpu=False):
    """Mixed precision for the forward pass: CUDA with ``amp`` bf16/fp16; CPU only with ``amp`` bf16 and
    ``amp_cpu`` true, or "auto" on a CPU with native bf16 (elsewhere bf16 matmuls are slower than fp32)."""
    if not amp:
        return contextlib.nullcontext()
    half = str(amp).lower() in ("fp16", "float16", "half")
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.float16 if half else torch.bfloat16)
    auto = str(amp_cpu).lower() == "auto"
    if device.type == "cpu" and not half and ((auto and cpu_bf16_supported()) or (amp_cpu is True)):
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


class _StopFlag:
    """SIGINT/SIGTERM set a flag; the loop saves ``last.pt`` at the next step boundary and returns."""

    def __init__(self):
        self.signum = None
        self._old = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for s in (signal.SIGINT, signal.SIGTERM):
                self._old[s] = signal.signal(s, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.signum is not None and signum == signal.SIGINT:  # second Ctrl-C: stop now
            raise KeyboardInterrupt
        self.signum = signum

    def __exit__(self, *exc):
        for s, h in self._old.items():
            signal.signal(s, h)


def _total_steps(tcfg, n: int, bs: int, accum: int, world: int) -> int:
    nb = n // (bs * world)
    if nb < 1:
        raise UserError(f"the training set has {n} events, fewer than one global batch ({bs} x {world} processes); lower train.batch_size")
    if tcfg["epochs"]:  # steps from the data: epochs over the training set, within [min_steps, max_steps]
        steps = max(int(tcfg["min_steps"] or 1), int(math.ceil(float(tcfg["epochs"]) * nb / accum)))
        return min(steps, int(tcfg["max_steps"])) if tcfg["max_steps"] else steps
    if tcfg["max_steps"]:
        return int(tcfg["max_steps"])
    raise UserError("train: set epochs or max_steps")


class _Schedules:
    """Per-step lr factor, β1 and weight decay (arrays indexed by the 0-based step)."""

    def __init__(self, tcfg, total: int):
        self.base_lr, self.cycle_momentum = float(tcfg["lr"]), bool(tcfg["cycle_momentum"])
        self.lr_f, self.mom = S.one_cycle(total, float(tcfg["pct_start"]), float(tcfg["div_factor"]), float(tcfg["final_div_factor"]))
        wd0, wd_end = float(tcfg["weight_decay"]), tcfg["weight_decay_end"]
        self.wd = S.cosine(wd0, float(wd_end), total) if wd_end is not None else S.constant(wd0, total)

    def apply(self, optimizer, t: int) -> None:
        for g in optimizer.param_groups:
            g["lr"] = float(self.base_lr * g["lr_scale"] * self.lr_f[t])
            g["weight_decay"] = float(self.wd[t]) if g["apply_wd"] else 0.0
            if self.cycle_momentum:
                g["betas"] = (float(self.mom[t]), g["betas"][1])


def _optimizer(task, tcfg):
    base_lr, wd0 = float(tcfg["lr"]), float(tcfg["weight_decay"])
    if hasattr(task, "param_groups"):
        groups = O.normalize_groups(task.param_groups(tcfg), base_lr, wd0)
    else:
        groups = O.param_groups(task, base_lr, wd0, float(tcfg["layer_decay"]))
    if not groups:
        raise UserError("the task has no trainable parameters")
    return O.build_optimizer(groups, base_lr)


def optimizer_step(task, optimizer, scaler, stream, t: int, tcfg, device, counters: dict) -> dict:
    """One optimizer step t over ``accum_steps`` micro-batches of ``stream``; updates ``counters`` (micro,
    non-finite and AMP-overflow counts) and returns the step's log record fields."""
    accum, use_fp16 = max(1, int(tcfg["accum_steps"])), scaler.is_enabled()
    optimizer.zero_grad(set_to_none=True)
    finite, events, logs, loss_sum, epoch = True, 0, {}, 0.0, 0
    for _ in range(accum):
        epoch, batch = next(stream)
        counters["micro"] += 1
        events += num_events(batch)
        with _autocast(device, tcfg["amp"], tcfg["amp_cpu"]):
            loss, step_logs = task.training_step(to_device(batch, device), t)
        if not bool(torch.isfinite(loss.detach()).all()):
            finite = False
            continue
        scaler.scale(loss / accum).backward()
        loss_sum += float(loss.detach()) / accum
        for k, v in (step_logs or {}).items():
            logs[k] = logs.get(k, 0.0) + float(v) / accum
    rec = {"epoch": epoch, "events": events * D.world_size()}
    if D.any_flag(not finite, device):  # no update on any rank
        optimizer.zero_grad(set_to_none=True)
        counters["nonfinite_total"] += 1
        counters["nonfinite_run"] += 1
        return {**rec, "nonfinite": True}
    params = [p for g in optimizer.param_groups for p in g["params"]]
    D.all_reduce_grads(params)
    scaler.unscale_(optimizer)
    clip = tcfg["grad_clip"]
    gn = torch.nn.utils.clip_grad_norm_(params, float(clip) if clip else float("inf"))
    scale_before = scaler.get_scale() if use_fp16 else None
    scaler.step(optimizer)
    scaler.update()
    if use_fp16 and scaler.get_scale() < scale_before:
        counters["amp_skipped"] += 1
        rec["amp_overflow"] = True
    if hasattr(task, "on_step_end"):
        task.on_step_end(t, counters["total"])
    counters["nonfinite_run"] = 0
    return {**rec, "loss": loss_sum, **logs, "grad_norm": float(gn)}


class _Validation:
    """Evaluates on the validation set (rank 0), logs it, keeps the best model and decides early stopping."""

    def __init__(self, task, tcfg, val_dataset, eval_fn, ckpt: Checkpointer, log: RunLog, counters: dict,
                 ema: WeightEMA | None = None):
        self.task, self.val_dataset, self.eval_fn, self.ckpt, self.log = task, val_dataset, eval_fn, ckpt, log
        self.ema = ema
        self.metric, self.patience = tcfg["select_metric"], int(tcfg["patience"] or 0)
        self.counters, self.last = counters, {}
        counters.setdefault("best_value", None)
        counters.setdefault("best_step", None)
        counters.setdefault("evals_since_best", 0)

    @property
    def enabled(self) -> bool:
        return self.eval_fn is not None and self.val_dataset is not None

    def __call__(self, step: int) -> bool:
        """Evaluate at ``step``; True when training should stop (patience exhausted, same on every rank)."""
        if not self.enabled:
            return False
        stop = False
        if D.rank() == 0:
            with self.ema.swapped_in(self.task) if self.ema else contextlib.nullcontext():
                stop = self._evaluate(step)
        D.barrier()
        return D.any_flag(stop)

    def _evaluate(self, step: int) -> bool:
        """Rank 0: evaluate the task as it stands, log it, keep it when best; True when patience is spent."""
        c = self.counters
        self.task.eval()
        with torch.no_grad():
            self.last = {k: float(v) for k, v in dict(self.eval_fn(self.task, self.val_dataset)).items()}
        self.task.train()
        self.log.write({"step": step, "split": "val", **self.last})
        if not self.metric:
            return False
        value = self.last.get(self.metric)
        if value is None:
            raise UserError(f"train.select_metric {self.metric!r} is not among the validation metrics "
                            f"({', '.join(sorted(self.last))})")
        if c["best_value"] is None or value > c["best_value"]:
            c["best_value"], c["best_step"], c["evals_since_best"] = value, step, 0
            self.ckpt.save_best(self.task, step, self.metric, value)
        else:
            c["evals_since_best"] += 1
        return bool(self.patience and c["evals_since_best"] >= self.patience)

    def restore_best(self) -> dict | None:
        """Load the best model into the task (every rank) when one was kept; returns its record."""
        if not (self.enabled and self.metric) or not self.ckpt.best.exists():
            return None
        return self.ckpt.load_best(self.task)


def _set_deterministic() -> None:
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark = False


def _start(task, optimizer, scaler, ckpt: Checkpointer, resume: bool, seed: int, total: int, global_batch: int,
           ema_decay: float = 0.0) -> tuple[dict, WeightEMA | None]:
    """The run's counters and weight average (None without ``ema_decay``): restored from ``last.pt`` when
    resuming, else fresh (RNGs seeded, every rank starting from rank 0's parameters)."""
    counters = {"step": 0, "micro": 0, "nonfinite_total": 0, "nonfinite_run": 0, "amp_skipped": 0}
    if resume and ckpt.last.exists():
        ema = WeightEMA(task, ema_decay) if ema_decay else None
        counters.update(ckpt.restore(task, optimizer, scaler, total, global_batch, ema))
    else:
        if resume and D.rank() == 0:
            print(f"larpanda: no checkpoint in {ckpt.dir}; starting a new run", file=sys.stderr)
        seed_all(seed + D.rank())
        if D.is_dist():
            for p in list(task.parameters()) + list(task.buffers()):
                torch.distributed.broadcast(p.data, 0)
        ema = WeightEMA(task, ema_decay) if ema_decay else None
    counters["total"] = total
    return counters, ema


def _check_nonfinite(log: RunLog, counters: dict, tcfg, epoch: int, t: int) -> None:
    """Warn about a skipped update; raise `NumericalError` after ``max_nonfinite`` in a row."""
    log.warn(f"warning: non-finite loss at step {t}; update skipped ({counters['nonfinite_run']} in a row)")
    if counters["nonfinite_run"] >= int(tcfg["max_nonfinite"]):
        log.write({"step": t + 1, "epoch": epoch, "nonfinite": True, "nonfinite_total": counters["nonfinite_total"]})
        raise NumericalError(
            f"training stopped at step {t + 1}: {counters['nonfinite_run']} non-finite losses in a row "
            f"(train.max_nonfinite={tcfg['max_nonfinite']}); lower train.lr, enable train.grad_clip, or check the input data")


def fit(task, dataset, cfg: dict, out_dir, resume: bool = False, val_dataset=None, eval_fn=None) -> dict:
    """Train ``task`` on ``dataset``; write ``out_dir/{metrics.jsonl,config.yaml,checkpoints/}``.

    ``cfg`` is a full config (its ``train:`` section is used) or the train section itself; see
    ``DEFAULTS`` for the keys. Returns ``{"step", "total_steps", "loss", "logs", "interrupted",
    "stopped_early", "best", "nonfinite", "amp_skipped", "steps_per_s", "events_per_s", "eval", "checkpoint"}``.
    """
    tcfg = train_section(cfg)
    D.init_from_env(None if tcfg["device"] in (None, "auto") else str(tcfg["device"]))
    world, device, seed = D.world_size(), _device(tcfg), int(tcfg["seed"])
    if tcfg["deterministic"]:
        _set_deterministic()
    ckpt = Checkpointer(Path(out_dir) / "checkpoints", tcfg["ckpt_keep_every"])
    if ckpt.last.exists() and not resume:
        raise UserError(f"{out_dir} already holds a run ({ckpt.last}); pass --resume to continue it or choose another --out")
    bs, accum = int(tcfg["batch_size"]), max(1, int(tcfg["accum_steps"]))
    total = _total_steps(tcfg, len(dataset), bs, accum, world)

    task.to(device)
    if hasattr(task, "setup"):
        task.setup(total)
    optimizer = _optimizer(task, tcfg)
    sched = _Schedules(tcfg, total)
    scaler = torch.amp.GradScaler("cuda", enabled=device.type == "cuda" and str(tcfg["amp"]).lower() in ("fp16", "float16", "half"))
    counters, ema = _start(task, optimizer, scaler, ckpt, resume, seed, total, bs * world,
                           float(tcfg["ema_decay"] or 0.0))

    stream = batch_stream(dataset, bs, seed, counters["micro"], getattr(task, "collate_fn", None),
                          shuffle=bool(tcfg["shuffle"]), num_workers=int(tcfg["num_workers"]), rank=D.rank(),
                          world=world, pin_memory=device.type == "cuda")
    log = RunLog(out_dir, cfg, tcfg, D.rank() == 0, counters["step"], total)
    validate = _Validation(task, tcfg, val_dataset, eval_fn, ckpt, log, counters, ema)
    save = lambda: ckpt.save(task, optimizer, scaler, counters, total, bs * world, ema)  # noqa: E731
    task.train()
    loss_val, logs, interrupted, stopped_early = float("nan"), {}, False, False
    t_start, ev_total, steps_run = time.perf_counter(), 0, 0
    try:
        with _StopFlag() as stop:
            while counters["step"] < total:
                if D.any_flag(stop.signum is not None):
                    interrupted = True
                    save()
                    log.warn(f"stopped by signal at step {counters['step']}/{total}; saved {ckpt.last}")
                    break
                t = counters["step"]
                sched.apply(optimizer, t)
                t0 = time.perf_counter()
                rec = optimizer_step(task, optimizer, scaler, stream, t, tcfg, device, counters)
                dt = time.perf_counter() - t0
                counters["step"] = done = t + 1
                step_events = rec.pop("events")
                ev_total, steps_run = ev_total + step_events, steps_run + 1
                events_per_s = step_events / dt if dt > 0 else None
                if rec.get("nonfinite"):
                    _check_nonfinite(log, counters, tcfg, rec["epoch"], t)
                else:
                    if ema is not None:
                        ema.update(task)
                    loss_val, logs = rec["loss"], {k: v for k, v in rec.items() if k not in ("epoch", "loss", "grad_norm", "amp_overflow")}
                if done % int(tcfg["log_every"]) == 0 or done == total or done == 1 or rec.get("nonfinite"):
                    log.write({"step": done, "epoch": rec["epoch"], "lr": float(sched.base_lr * sched.lr_f[t]),
                               "wd": float(sched.wd[t]), "loss": rec.get("loss"), **{k: v for k, v in rec.items() if k not in ("epoch", "loss")},
                               "events_per_s": events_per_s, "step_time_s": dt,
                               "nonfinite_total": counters["nonfinite_total"], "amp_skipped": counters["amp_skipped"]})
                log.progress(loss_val, events_per_s)
                if done % int(tcfg["ckpt_every"]) == 0 or done == total:
                    save()
                if tcfg["eval_every"] and done % int(tcfg["eval_every"]) == 0 and done < total and validate(done):
                    stopped_early = True
                    save()
                    log.warn(f"early stop at step {done}/{total}: no better val {tcfg['select_metric']} in "
                             f"{tcfg['patience']} evaluations (best {counters['best_value']:.4f} at step {counters['best_step']})")
                    break
            else:
                validate(counters["step"])
    finally:
        log.close()
    best = None if interrupted else validate.restore_best()
    if best is None and ema is not None and not interrupted:
        ema.copy_to(task)
    wall = max(time.perf_counter() - t_start, 1e-9)
    return {"step": counters["step"], "total_steps": total, "loss": loss_val, "logs": logs, "interrupted": interrupted,
            "stopped_early": stopped_early, "best": best, "nonfinite": counters["nonfinite_total"],
            "amp_skipped": counters["amp_skipped"], "steps_per_s": steps_run / wall, "events_per_s": ev_total / wall,
            "eval": validate.last, "checkpoint": str(ckpt.last)}
