"""The run's log: ``config.yaml`` once, one strict-JSON record per line in ``metrics.jsonl`` (train records
every ``log_every`` steps, ``"split": "val"`` records after each evaluation), optional TensorBoard scalars
and a progress bar. Only rank 0 writes; on other ranks every method is a no-op."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from ..atomic import json_text
from ..config import save_config


class RunLog:
    def __init__(self, out_dir, cfg: dict, tcfg: dict, main: bool, done: int, total: int):
        self.main, self.file, self.tb, self.bar = main, None, None, None
        if not main:
            return
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        if tcfg["_unknown"]:
            print(f"larpanda: warning: unknown train keys ignored: {', '.join(map(str, tcfg['_unknown']))}", file=sys.stderr)
        save_config(cfg if "train" in cfg else {"train": {k: v for k, v in tcfg.items() if not k.startswith("_")}},
                    out / "config.yaml")
        path = out / "metrics.jsonl"
        if done > 0 and path.exists():  # resumed: drop records written after the checkpoint
            keep = [ln for ln in path.read_text().splitlines() if ln.strip() and json.loads(ln).get("step", 0) <= done]
            path.write_text("".join(k + "\n" for k in keep))
        elif done == 0 and path.exists():
            path.unlink()
        self.file = open(path, "a")
        if tcfg["tensorboard"]:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(out / "tensorboard"))
            except Exception:  # tensorboard is optional
                self.tb = None
        progress = sys.stderr.isatty() if tcfg["progress"] is None else tcfg["progress"]
        if progress:
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=done, dynamic_ncols=True, desc="train", file=sys.stderr)

    def write(self, rec: dict) -> None:
        if not self.main:
            return
        self.file.write(json_text(rec) + "\n")  # strict JSON: a NaN value is written as null
        self.file.flush()
        if self.tb is not None:
            for k, v in rec.items():
                if isinstance(v, (int, float)) and k != "step":
                    self.tb.add_scalar(k if rec.get("split") != "val" else f"val/{k}", v, rec["step"])

    def progress(self, loss: float, events_per_s) -> None:
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(loss=f"{loss:.4f}", ev_s=f"{events_per_s:.1f}" if events_per_s else "-")

    def warn(self, msg: str) -> None:
        if self.main:
            print(f"larpanda: {msg}", file=sys.stderr)

    def close(self) -> None:
        for obj in (self.bar, self.file, self.tb):
            if obj is not None:
                obj.close()
        self.bar = self.file = self.tb = None
