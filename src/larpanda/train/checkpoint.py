"""Training checkpoints: ``checkpoints/last.pt`` (everything needed to resume exactly), optional
``checkpoints/step_<k>.pt`` copies, and ``checkpoints/best.pt`` (the model at the best validation score).

Written atomically (temp file, fsync, rename) and read back with ``torch.load(weights_only=True)``, so a
checkpoint can never run code. ``last.pt`` holds the model (incl. an EMA teacher), optimizer, grad scaler,
step counters, the best-so-far record, every rank's python/numpy/torch RNG state and, with
``train.ema_decay``, the moving average of the weights (``ema``).
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch

from ..atomic import atomic_path
from ..errors import UserError
from . import distributed as D

CKPT_FORMAT = "larpanda-train-1"


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


class Checkpointer:
    """Saves and restores the run state of `larpanda.train.fit` in ``ckpt_dir``.

    ``counters`` is the loop's dict of plain numbers (step, micro, non-finite and AMP counts, best
    validation record); it travels in ``last.pt`` unchanged."""

    def __init__(self, ckpt_dir, keep_every: int = 0):
        self.dir = Path(ckpt_dir)
        self.last, self.best = self.dir / "last.pt", self.dir / "best.pt"
        self.keep_every = int(keep_every or 0)
        self.main = D.rank() == 0

    def save(self, task, optimizer, scaler, counters: dict, total: int, global_batch: int, ema=None) -> None:
        """``last.pt`` (and ``step_<k>.pt`` every ``keep_every`` steps); a collective call on every rank."""
        rngs = D.all_gather_object(rng_state())
        if not self.main:
            return
        state = {
            "format": CKPT_FORMAT, "step": counters["step"], "micro": counters["micro"], "total_steps": total,
            "global_batch": global_batch, "world_size": D.world_size(),
            "model": task.state_dict(), "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict(),
            "counters": dict(counters), "rng": rngs,
        }
        if hasattr(task, "extra_state"):
            state["extra"] = task.extra_state()
        if ema is not None:
            state["ema"] = ema.state_dict()
        save_checkpoint(self.last, state)
        if self.keep_every and counters["step"] % self.keep_every == 0:
            save_checkpoint(self.dir / f"step_{counters['step']}.pt", state)

    def restore(self, task, optimizer, scaler, total: int, global_batch: int, ema=None) -> dict:
        """Load ``last.pt`` into the task, optimizer, scaler (and the weight average ``ema``, a
        `larpanda.train.ema.WeightEMA`), set this rank's RNGs; returns the counters."""
        ck = load_checkpoint(self.last)
        if ck.get("format") != CKPT_FORMAT:
            raise UserError(f"{self.last}: unknown checkpoint format {ck.get('format')!r}")
        if int(ck["total_steps"]) != total or int(ck["global_batch"]) != global_batch:
            raise UserError(
                f"{self.last}: run was {ck['total_steps']} steps at global batch {ck['global_batch']}, "
                f"this config gives {total} at {global_batch}; resume with the same config"
            )
        task.load_state_dict(ck["model"])
        optimizer.load_state_dict(ck["optimizer"])
        scaler.load_state_dict(ck["scaler"])
        if hasattr(task, "load_extra_state") and "extra" in ck:
            task.load_extra_state(ck["extra"])
        if ema is not None:
            if "ema" not in ck:
                raise UserError(f"{self.last}: the run was started without train.ema_decay; resume with the same config")
            ema.load_state_dict(ck["ema"])
        rngs = ck["rng"]
        set_rng_state(rngs[D.rank()] if len(rngs) == D.world_size() else rngs[0])
        return {**ck["counters"], "step": int(ck["step"]), "micro": int(ck["micro"])}

    def save_best(self, task, step: int, metric: str, value: float) -> None:
        if self.main:
            save_checkpoint(self.best, {"format": CKPT_FORMAT, "step": step, "metric": metric, "value": value,
                                        "model": task.state_dict()})

    def load_best(self, task) -> dict:
        """Load ``best.pt``'s model state into ``task``; returns ``{"step", "metric", "value"}``."""
        ck = load_checkpoint(self.best)
        task.load_state_dict(ck["model"])
        return {"step": int(ck["step"]), "metric": ck["metric"], "value": float(ck["value"])}
