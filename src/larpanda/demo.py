"""``larpanda demo``: the whole story on the built-in simulator, in one resumable command.

Steps (each writes a done-marker JSON with its wall and CPU seconds; re-running skips finished steps; a
training stopped by Ctrl-C / SIGTERM saves its checkpoint, gets no marker and resumes on the next call):

1. ``simulate``: train / val / test PILArNet-M v2 files (``DIR/data/{train,val,test}.h5``).
2. ``pretrain``: self-distillation of the tiny backbone on the *unlabelled* training events
   (``larpanda pretrain --config cpu-small``), exported to ``DIR/pretrain/backbone``.
3. ``semantic``: label fractions × {linear, decoder, scratch} (+ full fine-tuning at the smallest fraction,
   + the UResNet baseline), each trained with ``larpanda train semantic`` on a nested label subset and
   evaluated on the test set (docs/design.md §7.1).
4. ``panoptic``: particle-level detector (decoder mode) on the pretrained backbone, evaluated on the test
   set (docs/design.md §7.2).
5. ``report``: ``DIR/results.json`` (strict JSON: undefined metrics are null) and the offline
   ``DIR/report.html`` (`larpanda.viz.report`); skipped when no step ran and both files exist.

Steps 2-4 run in ``jobs`` worker processes (default: 2 on a machine with 2 or more usable cores), each
with its share of the cores' threads: the rows that need no pretrained backbone (scratch, UResNet) run
beside the pretraining, the others once it is done. Small models use two threads poorly, so two
one-thread jobs on 2 cores finish the same steps sooner than one two-thread job (docs/benchmarks.md "Demo").

Every training step goes through the same in-process command-line parser as the user's commands (so the
demo exercises exactly what the README documents) and evaluation through the Python API. Budgets on 2 CPU
cores: default ≤ 15 min, ``--quick`` ≤ 3 min (the sizes are in ``configs/demo/{default,quick}.yaml``;
measured per-step times in docs/benchmarks.md "Demo").
"""

from __future__ import annotations

import json
import os
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from .atomic import atomic_write_json
from .constants import ENERGY_THRESHOLD_MEV, MIN_RAW_POINTS, PID_CLASSES
from .errors import UserError

SPLITS = ("train", "val", "test")


def _log(msg: str) -> None:
    print(f"[demo {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def _sets(items) -> list[str]:
    out = []
    for s in items or []:
        out += ["--set", str(s)]
    return out


def _finished_run(run: Path) -> dict:
    """The ``summary.json`` of a training run that completed; a run stopped by a signal (checkpoint saved,
    ``fit.interrupted``) raises KeyboardInterrupt so that its step is NOT marked done and re-running resumes it."""
    summary = _read_json(run / "summary.json") or {}
    if (summary.get("fit") or {}).get("interrupted"):
        raise KeyboardInterrupt
    summary.setdefault("run", {})
    return summary


class Demo:
    """One demo directory: configuration, step markers, results."""

    def __init__(self, out, cfg: dict, workers: int = 1, quiet: bool = True):
        self.out = Path(out)
        self.cfg = cfg
        self.workers = max(1, int(workers))
        self.quiet = quiet
        self.out.mkdir(parents=True, exist_ok=True)
        self.steps_run = 0  # steps (re)computed by this object, i.e. not skipped by a marker

    # ------------------------------------------------------------------------------ step plumbing
    def step(self, name: str, marker: Path, fn):
        """Run ``fn() -> dict`` unless ``marker`` exists; the marker stores the result and the wall time."""
        done = _read_json(marker)
        if done is not None and "wall_s" in done:
            _log(f"{name}: done already ({done.get('wall_s', 0):.1f} s), skipping")
            return done
        _log(f"{name}: running")
        self.steps_run += 1
        t0, c0, started = time.perf_counter(), time.process_time(), time.time()
        res = fn() or {}
        res["wall_s"] = time.perf_counter() - t0
        res["cpu_s"] = time.process_time() - c0  # all threads of this process (> wall_s when threads run in parallel)
        res["started"], res["finished"] = started, time.time()  # epoch s: steps of parallel jobs overlap
        atomic_write_json(marker, res)
        _log(f"{name}: finished in {res['wall_s']:.1f} s (cpu {res['cpu_s']:.1f} s)")
        return res

    @property
    def data(self) -> Path:
        return self.out / "data"

    def split_file(self, split: str) -> Path:
        return self.data / f"{split}.h5"

    @property
    def backbone(self) -> Path:
        return self.out / "pretrain" / "backbone"

    def plan(self, kind: str, arg=None):
        """(name, marker, fn) of one step: ``kind`` "simulate", "pretrain", "semantic" (``arg`` = (mode,
        fraction)) or "panoptic" (``arg`` = level)."""
        if kind == "simulate":
            return "simulate", self.data / "done.json", self.simulate
        if kind == "pretrain":
            return "pretrain", self.out / "pretrain" / "done.json", self.pretrain
        if kind == "semantic":
            mode, frac = arg
            return (f"semantic {mode} @ {100 * frac:g} %", self.out / "semantic" / f"{mode}_{frac:g}" / "result.json",
                    lambda: self.semantic(mode, frac))
        return f"panoptic {arg}", self.out / "panoptic" / arg / "result.json", lambda: self.panoptic(arg)

    def tasks(self) -> list[tuple[str, object, bool]]:
        """(kind, arg, needs the pretrained backbone) of steps 2-4, longest first within each group (the
        100 % rows and the detector take longest), pretraining first."""
        from .tasks.study import PRETRAINED_MODES

        sem = sorted(self.semantic_runs(), key=lambda r: -r[1])
        return ([("pretrain", None, False)] + [("semantic", r, False) for r in sem if r[0] not in PRETRAINED_MODES]
                + [("panoptic", lv, True) for lv in self.panoptic_levels()]
                + [("semantic", r, True) for r in sem if r[0] in PRETRAINED_MODES])

    # ------------------------------------------------------------------------------------- steps
    def simulate(self) -> dict:
        from .data import pilarnet
        from .sim import generate_events

        sc = self.cfg["simulate"]
        seed = int(self.cfg.get("seed", 0))
        res, start = {}, 0
        for split in SPLITS:
            n = int(sc[split])
            evs = generate_events(n, seed, start_index=start, workers=self.workers)
            pilarnet.write_events(self.split_file(split), evs)
            res[split] = {"events": n, "points_median": float(sorted(len(e) for e in evs)[n // 2])}
            start += n  # disjoint event streams per split
        return res

    def pretrain(self) -> dict:
        from .tasks.study import run_cli

        pc = self.cfg["pretrain"]
        run = self.out / "pretrain"
        argv = ["pretrain", "--config", pc.get("config", "cpu-small"), "--data", self.split_file("train"),
                "--out", run, *_sets(pc.get("set"))]
        if self.quiet:
            argv.append("--quiet")
        if (run / "checkpoints" / "last.pt").exists():
            argv.append("--resume")
        run_cli(argv)
        if not (self.backbone / "config.json").exists():
            if (run / "checkpoints" / "last.pt").exists():  # stopped by a signal: checkpoint saved, no export
                raise KeyboardInterrupt
            raise UserError(f"pretraining finished but {self.backbone} holds no exported backbone")
        return {"backbone": str(self.backbone), "metrics": str(run / "metrics.jsonl")}

    def semantic_runs(self) -> list[tuple[str, float]]:
        sc = self.cfg["semantic"]
        runs = [(m, float(f)) for m in sc.get("modes", []) for f in sc.get("fractions", [])]
        for extra in sc.get("extra") or []:
            runs.append((extra["mode"], float(extra["label_fraction"])))
        return runs

    def panoptic_levels(self) -> list[str]:
        return list(self.cfg.get("panoptic", {}).get("levels", ["particle"]))

    def semantic(self, mode: str, frac: float) -> dict:
        from .tasks.study import PRETRAINED_MODES, semantic_row, semantic_run

        sc = self.cfg["semantic"]
        run = self.out / "semantic" / f"{mode}_{frac:g}"
        pretrained = mode in PRETRAINED_MODES
        summary, metrics, train_s = semantic_run(
            run, mode, frac, [self.split_file("train")], [self.split_file("val")], self._dataset("test"),
            weights=self.backbone if pretrained else None, seed=int(self.cfg.get("seed", 0)), config=sc.get("config"),
            extra_args=_sets(sc.get("set")) + _sets((sc.get("mode_set") or {}).get(mode)), quiet=self.quiet,
            max_test_events=self.cfg.get("eval", {}).get("max_test_events"))
        return semantic_row(metrics, mode, frac, pretrained, run=str(run.relative_to(self.out)), train_s=train_s,
                            eval_s=metrics["seconds_per_event"] * metrics["num_events"], steps=summary["fit"]["step"],
                            best_step=(summary["fit"].get("best") or {}).get("step"),
                            labelled_events=summary["run"].get("labelled_events"), test_events=metrics.get("num_events"),
                            **({"backbone": str(self.backbone.relative_to(self.out))} if pretrained else {}))

    def _dataset(self, split: str, energy_threshold: float = ENERGY_THRESHOLD_MEV):
        """Evaluation dataset of ``split`` (events with >= ``eval.min_points`` raw points, energy cut)."""
        from .tasks.common import make_dataset

        return make_dataset([str(self.split_file(split))],
                            {"energy_threshold": energy_threshold,
                             "min_points": int(self.cfg.get("eval", {}).get("min_points", MIN_RAW_POINTS))}, train=False)

    def panoptic(self, level: str) -> dict:
        from .tasks.panoptic import evaluate_model
        from .tasks.study import run_cli
        from .tasks.weights import load_task_model

        pc = self.cfg["panoptic"]
        run = self.out / "panoptic" / level
        mode = pc.get("mode", "decoder")
        frac = float(pc.get("label_fraction", 1.0))
        argv = ["train", "panoptic", "--level", level, "--mode", mode, "--label-fraction", frac,
                "--data", self.split_file("train"), "--val-data", self.split_file("val"), "--out", run,
                "--seed", int(self.cfg.get("seed", 0)), *_sets(pc.get("set"))]
        if pc.get("config"):
            argv += ["--config", pc["config"]]
        if pc.get("head"):
            argv += ["--head", pc["head"]]
        if mode != "scratch":
            argv += ["--weights", self.backbone]
        if self.quiet:
            argv.append("--quiet")
        if (run / "checkpoints" / "last.pt").exists():
            argv.append("--resume")
        t0 = time.perf_counter()
        run_cli(argv)
        summary = _finished_run(run)
        best = summary["fit"].get("best") or {}
        train_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        model = load_task_model(run / "weights", "panoptic")
        m = evaluate_model(model, self._dataset("test", model.energy_threshold), 4,
                           self.cfg.get("eval", {}).get("max_test_events"))
        row = {"level": level, "mode": mode, "head": model.head, "label_fraction": frac, "pretrained": mode != "scratch",
               "run": str(run.relative_to(self.out)), "train_s": train_s, "eval_s": time.perf_counter() - t0,
               "labelled_events": summary["run"].get("labelled_events"), "steps": summary["fit"]["step"],
               "best_step": best.get("step"), "best_metric": best.get("metric")}
        for k in ("ari", "f1", "precision", "recall", "pq", "sq", "rq", "matched_iou", "pq_std", "pid_accuracy",
                  "pid_confusion", "forward_s_per_event", "postprocess_s_per_event", "num_events"):
            if k in m:
                row[k] = m[k]
        if "pid_macro_f1" in m:
            row["pid_f1"] = m["pid_macro_f1"]
        if "pid_confusion" in m:
            row["pid_classes"] = list(PID_CLASSES[: len(m["pid_confusion"])])
        return row

    # ------------------------------------------------------------------------------------ report
    def display_events(self, results: dict) -> list[dict]:
        """A few test events with truth, predictions of the best semantic and the particle model, and the
        pretrained features, for the report's displays."""
        import numpy as np

        from .data import pilarnet
        from .data.transforms import prepare

        n = int(self.cfg.get("report", {}).get("events", 2))
        if n <= 0:
            return []
        events = pilarnet.read_events(self.split_file("test"), 0, n)
        sem_rows = [r for r in results.get("semantic", []) if r.get("run")]
        # predictions from the pretrained model with the fewest labels that is best (the story of the demo)
        sem_model = None
        if sem_rows:
            f0 = min(r["label_fraction"] for r in sem_rows)
            pick = max((r for r in sem_rows if r["label_fraction"] == f0 and r.get("pretrained")),
                       key=lambda r: r["mIoU"], default=None) or max(sem_rows, key=lambda r: r["mIoU"])
            from .tasks.weights import load_task_model

            sem_model = (load_task_model(self.out / pick["run"] / "weights", "semantic"), pick)
        pan_model = None
        pan_rows = [r for r in results.get("panoptic", []) if r.get("level") == "particle" and r.get("run")]
        if pan_rows:
            from .tasks.weights import load_task_model

            pan_model = load_task_model(self.out / pan_rows[0]["run"] / "weights", "panoptic")
        backbone = None
        if (self.backbone / "config.json").exists():
            from .io import load_model

            backbone = load_model(str(self.backbone))
        out = []
        for i, ev in enumerate(events):
            d = {"title": f"test event {i}", "voxel": ev.voxel, "energy": ev.energy,
                 "segment_motif": ev.segment_motif, "segment_pid": ev.segment_pid,
                 "instance_particle": ev.instance_particle, "instance_interaction": ev.instance_interaction, "pred": {}}
            if sem_model is not None:
                d["pred"]["segment_motif"] = sem_model[0].predict(ev)["semantic"]
                r = sem_model[1]
                d["title"] += f" · predicted by {r['mode']} @ {100 * r['label_fraction']:g} % labels"
            if pan_model is not None:
                p = pan_model.predict(ev)
                d["pred"]["instance_particle"] = p["instance"]
                if "pid" in p:
                    d["pred"]["segment_pid"] = p["pid"]
            if backbone is not None:
                d["features"] = backbone.embed(ev)
                d["feature_index"] = np.sort(prepare(ev, energy_threshold=ENERGY_THRESHOLD_MEV)["index"])
            out.append(d)
        return out

    def runs_for_curves(self) -> dict:
        runs = {}
        if (self.out / "pretrain" / "metrics.jsonl").exists():
            runs["pretrain"] = self.out / "pretrain" / "metrics.jsonl"
        for p in sorted((self.out / "semantic").glob("*/metrics.jsonl")):
            runs[p.parent.name.replace("_", " @ ")] = p
        for p in sorted((self.out / "panoptic").glob("*/metrics.jsonl")):
            runs[f"panoptic {p.parent.name}"] = p
        return runs


def _init_job(threads: int) -> None:
    """Worker process of `run_steps`: its share of the cores."""
    os.environ["OMP_NUM_THREADS"] = str(threads)
    import torch

    torch.set_num_threads(threads)


def _job_step(out, cfg, workers, quiet, kind, arg):
    demo = Demo(out, cfg, workers=workers, quiet=quiet)
    return demo.step(*demo.plan(kind, arg)), demo.steps_run


def run_steps(demo: Demo, jobs: int = 1, threads: int = 1) -> dict:
    """Run `Demo.tasks` (each skipped when its marker exists); returns {(kind, arg): row}. With ``jobs`` > 1,
    in that many spawned worker processes of ``threads`` torch threads each; the steps that need the
    pretrained backbone are submitted once the pretraining is done."""
    tasks = demo.tasks()
    if jobs <= 1:
        return {(k, a): demo.step(*demo.plan(k, a)) for k, a, _ in tasks}
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    rows = {}
    with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn"), initializer=_init_job,
                             initargs=(threads,)) as pool:
        def submit(task):
            return pool.submit(_job_step, demo.out, demo.cfg, demo.workers, demo.quiet, task[0], task[1])

        pending = {submit(t): t for t in tasks if not t[2]}
        later = [t for t in tasks if t[2]]
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for fut in done:
                kind, arg, _ = pending.pop(fut)
                rows[(kind, arg)], ran = fut.result()
                demo.steps_run += ran
                if kind == "pretrain":
                    pending.update({submit(t): t for t in later})
    return rows


def wall_of_steps(rows) -> float:
    """Seconds during which at least one step ran: the union of the steps' [started, finished] intervals
    (steps of parallel jobs overlap; a step recorded without them counts its ``wall_s``)."""
    spans = sorted((r["started"], r["finished"]) for r in rows if "started" in r and "finished" in r)
    total, end = sum(float(r["wall_s"]) for r in rows if "started" not in r or "finished" not in r), float("-inf")
    for a, b in spans:
        total += max(0.0, b - max(a, end))
        end = max(end, b)
    return total


def job_plan(jobs: int | None = None) -> tuple[int, int]:
    """(jobs, torch threads per job): by default 2 jobs when 2 or more cores are usable (more jobs gain
    little: half of the steps wait for the pretraining), else 1; the usable cores shared between them."""
    from .threads import usable_cpus

    n = max(1, usable_cpus()[0])
    jobs = (2 if n >= 2 else 1) if jobs is None else max(1, int(jobs))
    return jobs, max(1, n // jobs)


def run_demo(out, quick: bool = False, config=None, overrides=None, workers: int = 1, quiet: bool = True,
             jobs: int | None = None) -> dict:
    """Run (or resume) the demo in ``out``; returns the results dict (also ``out/results.json``). ``jobs``:
    worker processes for the training steps (None: `job_plan`).

    A call that finds every step done (and ``results.json`` + ``report.html`` written) re-runs nothing and
    returns the stored results."""
    from .config import apply_overrides, load_config, save_config
    from .viz import report, sections

    t_start = time.perf_counter()
    cfg = load_config(config or ("quick" if quick else "default"), "demo")
    cfg = apply_overrides(cfg, overrides)
    demo = Demo(out, cfg, workers=workers, quiet=quiet)
    save_config(cfg, demo.out / "demo_config.yaml")
    jobs, threads = job_plan(jobs)

    rows = {("simulate", None): demo.step(*demo.plan("simulate"))}
    rows.update(run_steps(demo, jobs, threads))
    order = [("simulate", None), ("pretrain", None)] + [("semantic", r) for r in demo.semantic_runs()] + [
        ("panoptic", lv) for lv in demo.panoptic_levels()]
    names = {k: demo.plan(*k)[0] for k in order}
    timings = {names[k]: rows[k]["wall_s"] for k in order}
    cpu = {names[k]: rows[k]["cpu_s"] for k in order if "cpu_s" in rows[k]}
    semantic = [rows[k] for k in order if k[0] == "semantic"]
    panoptic = [rows[k] for k in order if k[0] == "panoptic"]

    stored = _read_json(demo.out / "results.json")
    if demo.steps_run == 0 and stored is not None and (demo.out / "report.html").exists():
        _log(f"report: done already ({demo.out / 'report.html'}); nothing to do")
        return stored

    results = {
        "semantic": semantic,
        "panoptic": panoptic,
        "timings_s": timings,
        "timings_cpu_s": cpu,
        "jobs": jobs,
        "threads_per_job": threads if jobs > 1 else None,
        "versions": sections.versions(),
        "machine": sections.machine_info(),
        "config": cfg,
        "quick": bool(quick),
        "created": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }
    t0, c0 = time.perf_counter(), time.process_time()
    _log("report: building")
    events = demo.display_events(results)
    steps_wall = wall_of_steps(rows.values())
    timings["report"] = time.perf_counter() - t0  # the page's table shows the displays' share; results.json the total
    results["wall_s"] = steps_wall + timings["report"]
    report.build_report(results, demo.out / "report.html", events=events, extras={"runs": demo.runs_for_curves()})
    timings["report"] = time.perf_counter() - t0
    cpu["report"] = time.process_time() - c0
    results["wall_s"] = steps_wall + timings["report"]
    results["wall_s_this_call"] = time.perf_counter() - t_start
    atomic_write_json(demo.out / "results.json", results)
    _log(f"report: {demo.out / 'report.html'}  (total {results['wall_s']:.0f} s of steps, "
         f"{results['wall_s_this_call']:.0f} s this call)")
    return results
