"""The one training loop shared by pretraining and the downstream tasks: ``fit(task, dataset, cfg, out)``.

A *task* is an ``nn.Module`` with

- ``training_step(batch: Point, step: int) -> (loss, logs: dict[str, float])`` (required);
- ``param_groups(cfg) -> list[dict]`` (optional; default: ``optim.param_groups`` with layer decay);
- ``setup(total_steps)`` (optional; called once before training, e.g. to precompute SSL schedules);
- ``on_step_end(step, total_steps)`` (optional; after each applied optimizer update, e.g. EMA);
- ``collate_fn`` (optional attribute; default ``larpanda.data.point.collate``).

Loop, per optimizer step t (0-based): set lr/β1/wd from precomputed arrays → ``accum_steps``
micro-batches (autocast on CUDA) → if any loss is non-finite on any rank: no update, count, stop with
``NumericalError`` after ``max_nonfinite`` in a row → average grads over ranks → unscale, clip
→ AdamW step (fp16 overflow steps skipped by the GradScaler and counted) → ``on_step_end``.

Exact resume: the data order is a pure function of (seed, epoch), each sample's augmentation RNG is
seeded from (seed, epoch, index), the schedules are arrays indexed by step, and the checkpoint holds
model (incl. EMA teacher), optimizer, scaler, counters and every rank's python/numpy/torch RNG state.
Checkpoints are written atomically and read back with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import signal
import sys
import threading
import time
import zlib
from pathlib import Path

import numpy as np
import torch
import yaml

from ..atomic import atomic_path, json_text
from ..config import save_config
from ..errors import NumericalError, UserError
from . import distributed as D
from . import optim as O
from . import schedules as S

CKPT_FORMAT = "larpanda-train-1"

DEFAULTS = {
    "epochs": None,
    "max_steps": None,
    "batch_size": 4,  # per process (the paper's "12 per GPU")
    "lr": 1e-3,
    "weight_decay": 0.04,
    "weight_decay_end": None,  # cosine wd schedule when set (0.04 → 0.2 in pretraining)
    "layer_decay": 1.0,
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
    "num_workers": 0,
    "shuffle": True,
    "max_nonfinite": 5,
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


# ----------------------------------------------------------------------------------------------- RNG


def _seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict:
    """python/numpy/torch(/cuda) RNG states as tensors and primitives (safe for weights_only)."""
    py = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    st = {
        "python": [py[0], list(py[1]), py[2]],
        "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos), "has_gauss": int(has_gauss), "cached": float(cached)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        st["cuda"] = torch.cuda.get_rng_state_all()
    return st


def set_rng_state(st: dict) -> None:
    random.setstate((st["python"][0], tuple(st["python"][1]), st["python"][2]))
    n = st["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    torch.set_rng_state(st["torch"])
    if "cuda" in st and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(st["cuda"])


@contextlib.contextmanager
def seeded(*key):
    """Run with python/numpy/torch RNGs seeded from ``key`` and restore the caller's states after."""
    seed = zlib.crc32(repr(key).encode())
    saved = (random.getstate(), np.random.get_state(), torch.get_rng_state())
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    try:
        yield seed
    finally:
        random.setstate(saved[0])
        np.random.set_state(saved[1])
        torch.set_rng_state(saved[2])


# ---------------------------------------------------------------------------------------------- data


class _SeededItems(torch.utils.data.Dataset):
    """Wraps a dataset: item ``(epoch, i)`` is ``dataset[i]`` computed under RNGs seeded by (seed, epoch, i),
    so augmentations do not depend on workers, ranks or where a run was resumed. A `PILArNetDataset`
    (which seeds its own per-item rng from the epoch encoded in the index) gets ``epoch·len + i``."""

    def __init__(self, dataset, seed: int):
        self.dataset, self.seed = dataset, int(seed)
        try:
            from ..data.dataset import PILArNetDataset

            self.epoch_in_index = isinstance(dataset, PILArNetDataset)
        except ImportError:  # pragma: no cover
            self.epoch_in_index = False

    def __len__(self):
        return len(self.dataset)

    def _key(self, epoch, i):
        return epoch * len(self.dataset) + i if self.epoch_in_index else i

    def __getitem__(self, key):
        epoch, i = key
        with seeded(self.seed, epoch, i):
            return self.dataset[self._key(epoch, i)]

    def __getitems__(self, keys):
        if self.epoch_in_index and hasattr(self.dataset, "__getitems__"):
            with seeded(self.seed, *keys[0]):
                return self.dataset.__getitems__([self._key(e, i) for e, i in keys])
        return [self[k] for k in keys]


def epoch_order(n: int, seed: int, epoch: int, shuffle: bool) -> torch.Tensor:
    if not shuffle:
        return torch.arange(n)
    g = torch.Generator().manual_seed(int(seed) * 1_000_003 + int(epoch))
    return torch.randperm(n, generator=g)


class ShardedBatches(torch.utils.data.Sampler):
    """Batches of ``(epoch, index)`` for this rank, starting at batch ``start`` of ``epoch``.

    Global batch j of an epoch = ``order[j·B·W : (j+1)·B·W]``; rank r takes the r-th slice of B, so W
    processes with batch B see exactly the events one process with batch B·W sees (last partial global
    batch dropped)."""

    def __init__(self, n: int, batch_size: int, seed: int, epoch: int, start: int = 0, shuffle=True, rank=0, world=1):
        self.n, self.b, self.seed, self.epoch, self.start = n, batch_size, seed, epoch, start
        self.shuffle, self.rank, self.world = shuffle, rank, world

    @staticmethod
    def batches_per_epoch(n, batch_size, world) -> int:
        return n // (batch_size * world)

    def __len__(self):
        return self.batches_per_epoch(self.n, self.b, self.world) - self.start

    def __iter__(self):
        order = epoch_order(self.n, self.seed, self.epoch, self.shuffle).tolist()
        gb = self.b * self.world
        for j in range(self.start, self.batches_per_epoch(self.n, self.b, self.world)):
            lo = j * gb + self.rank * self.b
            yield [(self.epoch, i) for i in order[lo : lo + self.b]]


def _worker_init(worker_id):  # workers' own global RNGs (items are re-seeded anyway)
    s = torch.initial_seed() % 2**32
    random.seed(s)
    np.random.seed(s)


def _num_events(batch) -> int:
    if isinstance(batch, dict):
        if "num_events" in batch:
            v = batch["num_events"]
            return int(v if not isinstance(v, list) else len(v))
        if "offset" in batch:
            return int(len(batch["offset"]))
    return 0


def _to_device(batch, device):
    if hasattr(batch, "to") and not torch.is_tensor(batch) and isinstance(batch, dict):
        return batch.to(device)
    if isinstance(batch, dict):
        return type(batch)({k: _to_device(v, device) for k, v in batch.items()})
    if torch.is_tensor(batch):
        return batch.to(device)
    return batch


# ---------------------------------------------------------------------------------------- checkpoints


def save_checkpoint(path, state: dict) -> None:
    """Atomic ``torch.save`` (temp file in the same folder, fsync, rename)."""
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_checkpoint(path) -> dict:
    """Read a training checkpoint with ``weights_only=True`` (no code can run); clear error otherwise."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"checkpoint not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle payloads, truncated files
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UserError(f"{path}: not a loadable larpanda checkpoint (refused by weights_only loader: {msg})") from None


# ------------------------------------------------------------------------------------------- signals


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


# ----------------------------------------------------------------------------------------------- fit


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


def fit(task, dataset, cfg: dict, out_dir, resume: bool = False, val_dataset=None, eval_fn=None) -> dict:
    """Train ``task`` on ``dataset``; write ``out_dir/{metrics.jsonl,config.yaml,checkpoints/last.pt}``.

    ``cfg`` is a full config (its ``train:`` section is used) or the train section itself; see
    ``DEFAULTS`` for the keys. Returns ``{"step", "total_steps", "loss", "interrupted", "nonfinite",
    "amp_skipped", "steps_per_s", "events_per_s", "eval", "checkpoint"}``.
    """
    tcfg = train_section(cfg)
    out = Path(out_dir)
    ckpt_dir = out / "checkpoints"
    last = ckpt_dir / "last.pt"
    D.init_from_env(None if tcfg["device"] in (None, "auto") else str(tcfg["device"]))
    rank, world = D.rank(), D.world_size()
    main = rank == 0
    device = _device(tcfg)
    seed = int(tcfg["seed"])
    if tcfg["deterministic"]:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
    if last.exists() and not resume:
        raise UserError(f"{out} already holds a run ({last}); pass --resume to continue it or choose another --out")

    bs, accum = int(tcfg["batch_size"]), max(1, int(tcfg["accum_steps"]))
    n = len(dataset)
    nb = ShardedBatches.batches_per_epoch(n, bs, world)
    if nb < 1:
        raise UserError(f"the training set has {n} events, fewer than one global batch ({bs} x {world} processes); lower train.batch_size")
    if tcfg["max_steps"]:
        total = int(tcfg["max_steps"])
    elif tcfg["epochs"]:
        total = max(1, int(math.ceil(float(tcfg["epochs"]) * nb / accum)))
    else:
        raise UserError("train: set epochs or max_steps")

    task.to(device)
    if hasattr(task, "setup"):
        task.setup(total)
    base_lr, wd0 = float(tcfg["lr"]), float(tcfg["weight_decay"])
    if hasattr(task, "param_groups"):
        groups = O.normalize_groups(task.param_groups(tcfg), base_lr, wd0)
    else:
        groups = O.param_groups(task, base_lr, wd0, float(tcfg["layer_decay"]))
    if not groups:
        raise UserError("the task has no trainable parameters")
    optimizer = O.build_optimizer(groups, base_lr)
    params = [p for g in optimizer.param_groups for p in g["params"]]
    lr_f, mom = S.one_cycle(total, float(tcfg["pct_start"]), float(tcfg["div_factor"]), float(tcfg["final_div_factor"]))
    wd_end = tcfg["weight_decay_end"]
    wd = S.cosine(wd0, float(wd_end), total) if wd_end is not None else S.constant(wd0, total)
    use_fp16 = device.type == "cuda" and str(tcfg["amp"]).lower() in ("fp16", "float16", "half")
    scaler = torch.amp.GradScaler("cuda", enabled=use_fp16)

    done, micro, nonfinite_total, nonfinite_run, amp_skipped = 0, 0, 0, 0, 0
    if resume and last.exists():
        ck = load_checkpoint(last)
        if ck.get("format") != CKPT_FORMAT:
            raise UserError(f"{last}: unknown checkpoint format {ck.get('format')!r}")
        if int(ck["total_steps"]) != total or int(ck["global_batch"]) != bs * world:
            raise UserError(
                f"{last}: run was {ck['total_steps']} steps at global batch {ck['global_batch']}, "
                f"this config gives {total} at {bs * world}; resume with the same config"
            )
        task.load_state_dict(ck["model"])
        optimizer.load_state_dict(ck["optimizer"])
        scaler.load_state_dict(ck["scaler"])
        if hasattr(task, "load_extra_state") and "extra" in ck:
            task.load_extra_state(ck["extra"])
        done, micro = int(ck["step"]), int(ck["micro"])
        c = ck["counters"]
        nonfinite_total, nonfinite_run, amp_skipped = c["nonfinite_total"], c["nonfinite_run"], c["amp_skipped"]
        rngs = ck["rng"]
        set_rng_state(rngs[rank] if len(rngs) == world else rngs[0])
    else:
        if resume and main:
            print(f"larpanda: no checkpoint in {ckpt_dir}; starting a new run", file=sys.stderr)
        _seed_all(seed + rank)
        if D.is_dist():  # identical start on every rank
            for t in list(task.parameters()) + list(task.buffers()):
                torch.distributed.broadcast(t.data, 0)

    metrics_path = out / "metrics.jsonl"
    if main and tcfg["_unknown"]:
        print(f"larpanda: warning: unknown train keys ignored: {', '.join(map(str, tcfg['_unknown']))}", file=sys.stderr)
    if main:
        out.mkdir(parents=True, exist_ok=True)
        save_config(cfg if "train" in cfg else {"train": {k: v for k, v in tcfg.items() if not k.startswith("_")}}, out / "config.yaml")
        if done > 0 and metrics_path.exists():  # drop records written after the checkpoint
            keep = [ln for ln in metrics_path.read_text().splitlines() if ln.strip() and json.loads(ln).get("step", 0) <= done]
            metrics_path.write_text("".join(k + "\n" for k in keep))
        elif done == 0 and metrics_path.exists():
            metrics_path.unlink()
    mfile = open(metrics_path, "a") if main else None
    tb = None
    if main and tcfg["tensorboard"]:
        try:
            from torch.utils.tensorboard import SummaryWriter

            tb = SummaryWriter(str(out / "tensorboard"))
        except Exception:
            tb = None
    progress = tcfg["progress"]
    if progress is None:
        progress = sys.stderr.isatty()
    bar = None
    if main and progress:
        from tqdm import tqdm

        bar = tqdm(total=total, initial=done, dynamic_ncols=True, desc="train", file=sys.stderr)

    items = _SeededItems(dataset, seed)
    collate_fn = getattr(task, "collate_fn", None)
    if collate_fn is None:
        from ..data.point import collate as collate_fn

    def batches_from(m):
        while True:
            epoch, start = divmod(m, nb)
            sampler = ShardedBatches(n, bs, seed, epoch, start, bool(tcfg["shuffle"]), rank, world)
            nw = int(tcfg["num_workers"])
            loader = torch.utils.data.DataLoader(
                items, batch_sampler=sampler, collate_fn=collate_fn, num_workers=nw,
                worker_init_fn=_worker_init if nw else None,
                generator=torch.Generator().manual_seed(seed * 7919 + epoch),
                persistent_workers=False, pin_memory=device.type == "cuda",
            )
            for b in loader:
                yield epoch, b
            m = (epoch + 1) * nb

    stream = batches_from(micro)

    def checkpoint(step_done):
        rngs = D.all_gather_object(rng_state())
        if not main:
            return
        state = {
            "format": CKPT_FORMAT, "step": step_done, "micro": micro, "total_steps": total,
            "global_batch": bs * world, "world_size": world,
            "model": task.state_dict(), "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict(),
            "counters": {"nonfinite_total": nonfinite_total, "nonfinite_run": nonfinite_run, "amp_skipped": amp_skipped},
            "rng": rngs,
        }
        if hasattr(task, "extra_state"):
            state["extra"] = task.extra_state()
        save_checkpoint(last, state)
        k = int(tcfg["ckpt_keep_every"] or 0)
        if k and step_done % k == 0:
            save_checkpoint(ckpt_dir / f"step_{step_done}.pt", state)

    def log(rec):
        if not main:
            return
        mfile.write(json_text(rec) + "\n")  # strict JSON: a NaN log value is written as null
        mfile.flush()
        if tb is not None:
            for k, v in rec.items():
                if isinstance(v, (int, float)) and k != "step":
                    tb.add_scalar(k, v, rec["step"])

    eval_res = {}

    def evaluate(step_done):
        nonlocal eval_res
        if eval_fn is None or val_dataset is None:
            return
        if main:
            task.eval()
            with torch.no_grad():
                eval_res = {k: float(v) for k, v in dict(eval_fn(task, val_dataset)).items()}
            task.train()
            log({"step": step_done, "split": "val", **eval_res})
        D.barrier()

    task.train()
    loss_val, logs = float("nan"), {}
    t_start, ev_total, steps_run = time.perf_counter(), 0, 0
    interrupted = False
    try:
        with _StopFlag() as stop:
            while done < total:
                if D.any_flag(stop.signum is not None):
                    interrupted = True
                    checkpoint(done)
                    if main:
                        print(f"larpanda: stopped by signal at step {done}/{total}; saved {last}", file=sys.stderr)
                    break
                t = done
                for gi, g in enumerate(optimizer.param_groups):
                    g["lr"] = float(base_lr * g["lr_scale"] * lr_f[t])
                    g["weight_decay"] = float(wd[t]) if g["apply_wd"] else 0.0
                    if tcfg["cycle_momentum"]:
                        g["betas"] = (float(mom[t]), g["betas"][1])
                optimizer.zero_grad(set_to_none=True)
                t0 = time.perf_counter()
                finite, ev, logs_sum, loss_sum = True, 0, {}, 0.0
                epoch = 0
                for _ in range(accum):
                    epoch, batch = next(stream)
                    micro += 1
                    ev += _num_events(batch)
                    batch = _to_device(batch, device)
                    with _autocast(device, tcfg["amp"], tcfg["amp_cpu"]):
                        loss, step_logs = task.training_step(batch, t)
                    if not bool(torch.isfinite(loss.detach()).all()):
                        finite = False
                        continue
                    scaler.scale(loss / accum).backward()
                    loss_sum += float(loss.detach()) / accum
                    for k, v in (step_logs or {}).items():
                        logs_sum[k] = logs_sum.get(k, 0.0) + float(v) / accum
                finite = not D.any_flag(not finite, device)
                rec_extra = {}
                if finite:
                    D.all_reduce_grads(params)
                    scaler.unscale_(optimizer)
                    clip = tcfg["grad_clip"]
                    gn = torch.nn.utils.clip_grad_norm_(params, float(clip) if clip else float("inf"))
                    scale_before = scaler.get_scale() if use_fp16 else None
                    scaler.step(optimizer)
                    scaler.update()
                    if use_fp16 and scaler.get_scale() < scale_before:
                        amp_skipped += 1
                        rec_extra["amp_overflow"] = True
                    if hasattr(task, "on_step_end"):
                        task.on_step_end(t, total)
                    nonfinite_run = 0
                    loss_val, logs = loss_sum, logs_sum
                    rec_extra["grad_norm"] = float(gn)
                else:
                    optimizer.zero_grad(set_to_none=True)
                    nonfinite_total += 1
                    nonfinite_run += 1
                    rec_extra["nonfinite"] = True
                    if main:
                        print(f"larpanda: warning: non-finite loss at step {t}; update skipped ({nonfinite_run} in a row)", file=sys.stderr)
                done += 1
                dt = time.perf_counter() - t0
                ev_global = ev * world
                ev_total += ev_global
                steps_run += 1
                if not finite and nonfinite_run >= int(tcfg["max_nonfinite"]):
                    log({"step": done, "epoch": epoch, "nonfinite": True, "nonfinite_total": nonfinite_total})
                    raise NumericalError(
                        f"training stopped at step {done}: {nonfinite_run} non-finite losses in a row "
                        f"(train.max_nonfinite={tcfg['max_nonfinite']}); lower train.lr, enable train.grad_clip, or check the input data"
                    )
                if done % int(tcfg["log_every"]) == 0 or done == total or done == 1 or not finite:
                    rec = {
                        "step": done, "epoch": epoch, "lr": float(base_lr * lr_f[t]), "wd": float(wd[t]),
                        "loss": loss_sum if finite else None, **(logs_sum if finite else {}), **rec_extra,
                        "events_per_s": ev_global / dt if dt > 0 else None, "step_time_s": dt,
                        "nonfinite_total": nonfinite_total, "amp_skipped": amp_skipped,
                    }
                    log(rec)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{loss_val:.4f}", ev_s=f"{ev_global / dt:.1f}" if dt > 0 else "-")
                if done % int(tcfg["ckpt_every"]) == 0 or done == total:
                    checkpoint(done)
                if tcfg["eval_every"] and done % int(tcfg["eval_every"]) == 0 and done < total:
                    evaluate(done)
            else:
                evaluate(done)
    finally:
        if bar is not None:
            bar.close()
        if mfile is not None:
            mfile.close()
        if tb is not None:
            tb.close()
    wall = time.perf_counter() - t_start
    return {
        "step": done, "total_steps": total, "loss": loss_val, "logs": logs, "interrupted": interrupted,
        "nonfinite": nonfinite_total, "amp_skipped": amp_skipped,
        "steps_per_s": steps_run / wall if wall > 0 else None, "events_per_s": ev_total / wall if wall > 0 else None,
        "eval": eval_res, "checkpoint": str(last),
    }
