"""One prepared device check: correct, deterministic and fast on a GPU (or a quick CPU dry run).

    python benchmarks/gpu_check.py --out DIR [--device cuda|cpu] [--quick] [--budget-s 330]
                                   [--tests-k EXPR] [--threads N]

Writes ``DIR/gpu_check.json`` and ``DIR/gpu_check.md`` (atomically, after every section, so a run stopped
at its time limit keeps the finished sections), plus ``DIR/device_tests.xml`` / ``.log``. Each section runs
in try/except (an error is recorded with its traceback tail and the next section runs) within its time
budget inside the global ``--budget-s`` (default 330 s, so the whole check ends within 6 minutes):

* ``environment``: versions, device, git commit, wall time of every section;
* ``device_tests``: ``pytest -m device tests/nn`` in a subprocess with ``LARPANDA_TEST_DEVICE``;
* ``throughput``: events/s and peak memory of the semantic decoder predict, the particle panoptic predict
  (post-processing included) and the backbone embed, fp32 and bf16 autocast, batch 1, 2, 4, ... until
  out of memory or no gain, beside the Panda slides' A100 anchors and the H200 targets;
* ``profile``: top ops of the semantic forward (torch.profiler) and the sparse-conv / attention shares;
* ``pretrain``: the real pretraining step (`larpanda.train.trainer.optimizer_step`) at batch 12 and up.

``--quick`` (and always ``--device cpu``): ``tiny`` model, 3 events, 1 repetition. Random weights
(throughput only). Never imports plotly (the GPU machine has none). The measurements live in
``gpu_check_measure.py``, the Markdown report and other standard-library helpers in ``gpu_check_report.py``.
"""

from __future__ import annotations

import argparse
import importlib
import os
import subprocess
import sys
import time
import traceback
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
try:
    import larpanda  # noqa: F401
except ImportError:  # the device machine runs the copied repo without installing it
    sys.path.insert(0, str(REPO / "src"))

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gpu_check_measure import ANCHORS, TARGETS, free_memory, sec_pretrain, sec_profile, sec_throughput  # noqa: E402
from gpu_check_report import SECTIONS, git_state, markdown, parse_junit  # noqa: E402

from larpanda.atomic import atomic_write_json, atomic_write_text  # noqa: E402

SCHEMA = "larpanda.gpu_check/1"
DEVICE_TEST_PATHS = ("tests/nn",)  # every ``device``-marked test lives here
INPUT_KEYS = ("coord", "grid_coord", "feat", "offset")


def settings(args) -> dict:
    """Sizes and per-section budgets (seconds) of a full GPU run or of a quick / CPU run."""
    if args.quick or args.device == "cpu":
        return dict(preset="tiny", pretrain_config="cpu-small", events=3, batches=[1, 2], warmup=1, reps=1,
                    min_time_s=0.0, pretrain_batch=2, pretrain_max_batch=4, pretrain_steps=1, profile_batch=2,
                    budgets=dict(device_tests=90, throughput=45, profile=15, pretrain=40))
    return dict(preset="panda-base", pretrain_config="panda-base", events=32, batches=[1, 2, 4, 8, 16, 32, 64, 128],
                warmup=2, reps=20, min_time_s=0.6, pretrain_batch=12, pretrain_max_batch=1024, pretrain_steps=2,
                profile_batch=8, budgets=dict(device_tests=90, throughput=120, profile=25, pretrain=90))


class Context:
    """What the sections share: device, settings, the simulated events and their collated batches."""

    def __init__(self, args):
        self.args, self.cfg = args, settings(args)
        self.device = torch.device(args.device)
        self._events, self._batches = None, {}

    @property
    def events(self):
        if self._events is None:  # PILArNet-M-sized events of the built-in simulator
            from larpanda.sim.generate import generate_event

            self._events = [generate_event(2026, i) for i in range(self.cfg["events"])]
        return self._events

    def batch(self, b: int):
        """The model inputs of b events (cycling through the pool) on the host, as predict prepares them."""
        if b not in self._batches:
            from larpanda.data.point import Point
            from larpanda.data.transforms import prepare_batch

            full = prepare_batch([self.events[i % len(self.events)] for i in range(b)])
            self._batches[b] = Point({k: full[k] for k in INPUT_KEYS})
        return self._batches[b]

    def sync(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def reset_peak(self):
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)

    def peak_gb(self):
        """Peak allocated device memory (GB) since `reset_peak`; None on CPU."""
        return round(torch.cuda.max_memory_allocated(self.device) / 1e9, 3) if self.device.type == "cuda" else None


# ------------------------------------------------------------------------------------------ sections


def sec_environment(ctx: Context, deadline: float) -> dict:
    """Versions, device (name, capability, memory in GB), optional GPU packages, git commit."""
    import platform

    env = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
           "device": str(ctx.device), "cuda_available": torch.cuda.is_available(), "cpu_count": os.cpu_count(),
           "torch_threads": torch.get_num_threads(), "larpanda": str(Path(sys.modules["larpanda"].__file__).parent),
           "sparse_backend": os.environ.get("LARPANDA_SPARSE_BACKEND", "torch"),
           "cuda_alloc_conf": os.environ.get("PYTORCH_CUDA_ALLOC_CONF"), "quick": ctx.cfg["preset"] == "tiny"}
    if ctx.device.type == "cuda" and torch.cuda.is_available():
        p = torch.cuda.get_device_properties(ctx.device)
        env.update(device_name=p.name, capability=f"{p.major}.{p.minor}", total_memory_gb=round(p.total_memory / 1e9, 1),
                   cudnn=torch.backends.cudnn.version(), tf32_matmul=torch.backends.cuda.matmul.allow_tf32)
    else:
        env["device_name"] = platform.processor() or platform.machine()
    for mod in ("triton", "flash_attn", "spconv"):
        try:
            env[mod] = getattr(importlib.import_module(mod), "__version__", "present")
        except Exception:  # absent or broken
            env[mod] = None
    env["git_commit"], env["git_dirty_files"] = git_state(REPO)
    return env


def sec_device_tests(ctx: Context, deadline: float) -> dict:
    """Every ``device``-marked test on the device, in a pytest subprocess; per-test outcome from junit XML."""
    out = Path(ctx.args.out)
    xml = out / "device_tests.xml"
    xml.unlink(missing_ok=True)
    env = dict(os.environ, LARPANDA_TEST_DEVICE=str(ctx.device), CUBLAS_WORKSPACE_CONFIG=":4096:8",
               PYTHONPATH=os.pathsep.join([str(REPO / "src")] + [p for p in [os.environ.get("PYTHONPATH")] if p]))
    cmd = [sys.executable, "-m", "pytest", "-m", "device", "-q", "-p", "no:cacheprovider",
           "--continue-on-collection-errors", f"--junitxml={xml}", *DEVICE_TEST_PATHS]
    cmd += ["-k", ctx.args.tests_k] if ctx.args.tests_k else []
    timeout = max(5.0, deadline - time.perf_counter())
    try:
        r = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
        rc, log = r.returncode, r.stdout + r.stderr
    except subprocess.TimeoutExpired as exc:  # its output may come as bytes even with text=True
        so = exc.stdout or ""
        rc, log = None, f"timed out after {timeout:.0f} s\n" + (so.decode(errors="replace") if isinstance(so, bytes) else so)
    atomic_write_text(out / "device_tests.log", log)
    tests = parse_junit(xml) if xml.exists() else []
    counts = {k: sum(t["outcome"] == k for t in tests) for k in ("passed", "failed", "error", "skipped")}
    res = {"command": " ".join(cmd[1:]), "returncode": rc, "tests": tests, "counts": counts,
           "all_passed": counts["passed"] > 0 and counts["failed"] == counts["error"] == 0, "log_tail": log[-1500:]}
    if rc is None or not tests:
        res.update(status="error", error="pytest " + ("timed out" if rc is None else f"exited {rc} without test results"))
    return res


def save(report: dict, out: Path):
    atomic_write_json(out / "gpu_check.json", report)
    atomic_write_text(out / "gpu_check.md", markdown(report))


def run_section(report: dict, name: str, fn, ctx: Context, budget: float, out: Path):
    """Run one section within ``budget`` seconds; record status, result or error, wall time; save."""
    t0 = time.perf_counter()
    rec = {"status": "ok", "budget_s": round(budget, 1)}
    if ctx.device.type == "cuda" and not torch.cuda.is_available() and name not in ("environment", "device_tests"):
        rec.update(status="skipped", reason="CUDA is not available")
    elif budget < 1:
        rec.update(status="skipped", reason="no time left in the global budget")
    else:
        try:
            rec.update(fn(ctx, t0 + budget))
        except Exception as exc:
            rec.update(status="error", error=f"{type(exc).__name__}: {exc}"[:2000],
                       traceback=traceback.format_exc()[-4000:])
    free_memory(ctx)  # the section's models are gone: give their cached blocks back
    rec["wall_s"] = round(time.perf_counter() - t0, 2)
    report["sections"][name] = rec
    save(report, out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="output directory")
    ap.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    ap.add_argument("--quick", action="store_true", help="tiny model, 3 events, 1 repetition")
    ap.add_argument("--budget-s", type=float, default=330.0, help="global time budget in seconds")
    ap.add_argument("--tests-k", default=None, help="pytest -k expression for the device tests (default: all)")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    ctx = Context(args)
    t0 = time.perf_counter()
    report = {"schema": SCHEMA, "device": args.device, "quick": args.quick or args.device == "cpu",
              "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "args": vars(args), "settings": ctx.cfg,
              "anchors": ANCHORS, "targets": TARGETS, "sections": {}}
    fns = {"environment": sec_environment, "device_tests": sec_device_tests, "throughput": sec_throughput,
           "profile": sec_profile, "pretrain": sec_pretrain}
    for name in SECTIONS:
        left = args.budget_s - (time.perf_counter() - t0)
        run_section(report, name, fns[name], ctx, min(ctx.cfg["budgets"].get(name, 30), left), out)
    env = report["sections"]["environment"]
    env["section_wall_s"] = {n: report["sections"][n]["wall_s"] for n in SECTIONS}
    env["plotly_imported"] = "plotly" in sys.modules
    report["wall_s"] = round(time.perf_counter() - t0, 1)
    save(report, out)
    print(markdown(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
