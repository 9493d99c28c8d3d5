"""Thread policy on shared cores: wall time of ``larpanda demo --quick`` alone and beside a running
``larpanda train semantic``, with the policy off (torch's defaults: ``LARPANDA_THREADS_POLICY=off``) and with
the default policy (`larpanda.threads`).

A run is ``POLICY:SETTING``: POLICY ``off`` or ``auto``, SETTING ``alone`` (nothing else running) or ``beside``
(a tiny-PTv3 scratch training on simulated events is started first, with the same POLICY, and the demo starts
once it has made 3 steps; the training is stopped when the demo ends), or ``beside_off`` (the same beside a
training with the policy off: a torch process that does not follow it). Every process is a fresh ``larpanda``
command line (``larpanda.cli.main``) whose ``larpanda.threads`` log line is kept. Results merge into
``WORKDIR/shared_cores.json``, so the runs can be measured in separate calls (each one on a quiet machine):

    python benchmarks/bench_shared_cores.py --workdir W --runs off:alone,auto:alone
    python benchmarks/bench_shared_cores.py --workdir W --runs off:beside
    python benchmarks/bench_shared_cores.py --workdir W --runs auto:beside
    python benchmarks/bench_shared_cores.py --workdir W --runs none       # print the summary only

Acceptance: with the default policy, the demo beside the training within 3x its time alone; alone, within
10 % of the time with the policy off.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

RUNNER = """import logging, sys
h = logging.StreamHandler()
h.setFormatter(logging.Formatter("%(name)s: %(message)s"))
logging.getLogger("larpanda.threads").addHandler(h)
logging.getLogger("larpanda.threads").setLevel(logging.INFO)
from larpanda.cli import main
sys.exit(main(sys.argv[1:]))
"""
THREAD_VARS = ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "MKL_NUM_THREADS",
               "LARPANDA_THREADS", "LARPANDA_THREADS_POLICY")
WARM_STEPS = 3


def child_env(policy: str) -> dict:
    """The environment without any thread setting, plus ``LARPANDA_THREADS_POLICY=off`` for ``off``."""
    env = {k: v for k, v in os.environ.items() if k not in THREAD_VARS}
    if policy == "off":
        env["LARPANDA_THREADS_POLICY"] = "off"
    return env


def larpanda(args, policy: str, log: Path) -> subprocess.Popen:
    """Start ``larpanda ARGS`` (stdout and stderr to ``log``)."""
    with open(log, "w") as fh:
        return subprocess.Popen([sys.executable, "-c", RUNNER, *map(str, args)], env=child_env(policy),
                                stdout=fh, stderr=subprocess.STDOUT)


def plan_line(log: Path) -> str | None:
    for line in log.read_text(errors="replace").splitlines():
        if line.startswith("larpanda.threads: "):
            return line.split(": ", 1)[1]
    return None


def loadavg() -> str:
    return Path("/proc/loadavg").read_text().split(" ", 3)[0]


def steps_done(run_dir: Path) -> int:
    """Training steps logged so far (``train.log_every=1``: one metrics line per step)."""
    try:
        return sum('"step_time_s"' in line for line in (run_dir / "metrics.jsonl").read_text().splitlines())
    except OSError:
        return 0


def simulated_data(workdir: Path) -> Path:
    """240 simulated events (200 train) for the background training, made once."""
    data = workdir / "data"
    if not (data / "train").exists():
        subprocess.run([sys.executable, "-c", RUNNER, "simulate", "--events", "240", "--seed", "1", "--split",
                        "200,20,20", "--out", str(data), "--quiet"], env=child_env("auto"), check=True)
    return data / "train"


def start_training(workdir: Path, policy: str, timeout: float = 240) -> tuple[subprocess.Popen, Path, Path]:
    """A ``larpanda train semantic`` (tiny PTv3 from scratch, batch 4, no validation, endless) with ``policy``,
    returned once it has logged `WARM_STEPS` steps."""
    train, run = simulated_data(workdir), workdir / f"{policy}_train"
    shutil.rmtree(run, ignore_errors=True)
    log = workdir / f"{policy}_train.log"
    proc = larpanda(["train", "semantic", "--mode", "scratch", "--data", train, "--out", run, "--quiet",
                     "--set", "model.preset=tiny", "--set", "train.max_steps=1000000", "--set", "train.log_every=1",
                     "--set", "train.ckpt_every=1000000"], policy, log)
    t0 = time.monotonic()
    while steps_done(run) < WARM_STEPS:
        if proc.poll() is not None or time.monotonic() - t0 > timeout:
            proc.kill()
            raise RuntimeError(f"the background training did not reach {WARM_STEPS} steps; see {log}")
        time.sleep(0.5)
    return proc, run, log


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def measure(workdir: Path, policy: str, setting: str) -> dict:
    """One run: the demo's wall time (s), its thread plan, and for ``beside`` the training's plan and its
    steps per second while the demo ran."""
    row = {"policy": policy, "setting": setting, "loadavg_start": loadavg()}
    train = None
    if setting.startswith("beside"):
        train, run, train_log = start_training(workdir, "off" if setting == "beside_off" else policy)
        steps0, t_train = steps_done(run), time.monotonic()
    out, log = workdir / f"{policy}_{setting}_demo", workdir / f"{policy}_{setting}_demo.log"
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.monotonic()
    proc = larpanda(["demo", "--quick", "--out", out], policy, log)
    rc = proc.wait()
    row["demo_wall_s"] = round(time.monotonic() - t0, 1)
    row.update(demo_rc=rc, demo_plan=plan_line(log), loadavg_end=loadavg())
    if train is not None:
        row["train_steps_per_s_during_demo"] = round((steps_done(run) - steps0) / (time.monotonic() - t_train), 3)
        row["train_plan"] = plan_line(train_log)
        stop(train)
    if rc != 0:
        raise RuntimeError(f"demo failed (exit {rc}); see {log}")
    return row


def summary(runs: dict) -> dict:
    """Ratios of the measured runs: beside / alone per policy, and auto / off alone."""
    wall = {k: v["demo_wall_s"] for k, v in runs.items()}
    out = {}
    for policy in ("off", "auto"):
        if f"{policy}:alone" in wall and f"{policy}:beside" in wall:
            out[f"{policy}_beside_over_alone"] = round(wall[f"{policy}:beside"] / wall[f"{policy}:alone"], 2)
    if "auto:alone" in wall and "off:alone" in wall:
        out["auto_alone_over_off_alone"] = round(wall["auto:alone"] / wall["off:alone"], 3)
        out["alone_within_10_percent"] = out["auto_alone_over_off_alone"] <= 1.10
    if "auto_beside_over_alone" in out:
        out["beside_within_3x"] = out["auto_beside_over_alone"] <= 3.0
    if "auto:beside_off" in wall and "auto:alone" in wall:
        out["auto_beside_off_over_alone"] = round(wall["auto:beside_off"] / wall["auto:alone"], 2)
    return out


def commit() -> str:
    root = Path(__file__).resolve().parents[1]
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True).stdout
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True).stdout.strip()
    except OSError:
        return "unknown"
    return head.strip() + (" with uncommitted changes" if dirty else "")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", required=True, help="data, runs, logs and shared_cores.json (kept)")
    ap.add_argument("--runs", default="off:alone,auto:alone,off:beside,auto:beside",
                    help="comma-separated POLICY:SETTING (off|auto : alone|beside|beside_off), or 'none'")
    args = ap.parse_args()
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    result_path = workdir / "shared_cores.json"
    result = json.loads(result_path.read_text()) if result_path.exists() else {"runs": {}}
    for name in [r for r in args.runs.split(",") if r and r != "none"]:
        policy, setting = name.split(":")
        if policy not in ("off", "auto") or setting not in ("alone", "beside", "beside_off"):
            raise SystemExit(f"bench_shared_cores: error: unknown run {name!r}")
        row = measure(workdir, policy, setting)
        row.update(commit=commit(), date=time.strftime("%Y-%m-%d %H:%M:%S"))
        result["runs"][name] = row
        print(json.dumps({name: row}), flush=True)
        result["summary"] = summary(result["runs"])
        result_path.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(summary(result["runs"]), indent=1))


if __name__ == "__main__":
    main()
