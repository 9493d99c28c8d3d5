"""Standard-library helpers of `gpu_check.py`: the device tests' junit XML in, the Markdown report out,
the process RSS and the repository's git state.

`markdown(report)` renders ``gpu_check.json`` (its ``anchors`` / ``targets`` included) as a summary table,
one row per section, then the throughput, pretraining, profile and device-test tables. Only the standard
library: it also renders a JSON brought back from the device machine.
"""

from __future__ import annotations

import os
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

SECTIONS = ("environment", "device_tests", "throughput", "profile", "pretrain")


def rss_mb() -> float | None:
    """Resident memory of this process (MB; Linux), the CPU stand-in for device memory."""
    try:
        with open("/proc/self/statm") as f:
            return round(int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20, 1)
    except OSError:
        return None


def git_state(repo: Path):
    """(HEAD commit, number of changed files) of ``repo``; (None, None) without git or a .git directory."""
    try:
        run = lambda *a: subprocess.run(["git", *a], cwd=repo, capture_output=True, text=True, timeout=20)  # noqa: E731
        head = run("rev-parse", "HEAD")
        if head.returncode != 0:
            return None, None
        return head.stdout.strip(), len(run("status", "--porcelain").stdout.splitlines())
    except (OSError, subprocess.SubprocessError):
        return None, None


def parse_junit(path: Path) -> list[dict]:
    """One dict per test case: ``name`` (path::test, or "path.py (collection)" for a module that failed to
    import), ``outcome`` (passed/failed/error/skipped), ``time_s`` and, unless passed, the ``message``
    (pytest's message and the end of the report, at most 800 characters)."""
    tests = []
    for case in ET.parse(path).getroot().iter("testcase"):
        outcome, msg = "passed", None
        for tag in ("failure", "error", "skipped"):
            el = case.find(tag)
            if el is not None:
                outcome, msg = {"failure": "failed"}.get(tag, tag), (el.get("message") or "")[:500]
                msg += (" ... " + el.text.strip()[-300:]) if tag != "skipped" and (el.text or "").strip() else ""
                break
        cls, name = case.get("classname") or "", case.get("name")
        name = f"{cls.replace('.', '/')}.py::{name}" if cls else f"{name.replace('.', '/')}.py (collection)"
        tests.append({"name": name, "outcome": outcome, "time_s": round(float(case.get("time") or 0), 3),
                      **({"message": msg} if msg else {})})
    return tests


def md_cell(x) -> str:
    return ("n/a" if x is None else str(x)).replace("|", "\\|").replace("\n", " ")[:160]


def md_summary(name: str, s: dict) -> str:
    """The one-line result of a section for the summary table."""
    if s.get("status") != "ok":
        return s.get("error") or s.get("reason") or ""
    if name == "environment":
        return f"torch {s['torch']}, {s.get('device_name')}, commit {(s.get('git_commit') or 'unknown')[:10]}"
    if name == "device_tests":
        c = s["counts"]
        bad = "" if s["all_passed"] else " **NOT ALL PASSED**"
        return f"{c['passed']} passed, {c['failed']} failed, {c['error']} errors, {c['skipped']} skipped{bad}"
    if name == "throughput":
        errors = [f"{r['task']} {r['dtype']}: {r['error']}" for r in s["rows"] if "error" in r]
        return "; ".join(errors + [f"{t} best {v['best']['events_per_s']} ev/s ({v['best']['dtype']}, batch {v['best']['batch']})"
                                   for t, v in s["summary"].items()])
    if name == "profile":
        f = s["shares_fp32"]
        return f"sparse conv {100 * f['sparse_conv_share']:.1f} %, attention {100 * f['attention_share']:.1f} % of the forward"
    ok = [r for r in s["rows"] if "step_s" in r]
    first = f"batch {ok[0]['batch']}: {ok[0]['step_s']} s/step" if ok else "no step"
    return f"{first}; largest fitting batch {s['largest_batch_fitting']} (stopped: {s['stopped']})"


def table(head: list[str], rows: list[list]) -> list[str]:
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    return out + ["| " + " | ".join(md_cell(c) for c in r) + " |" for r in rows]


def detail_tables(report: dict) -> list[str]:
    sec, anchors, targets = report["sections"], report.get("anchors", {}), report.get("targets", {})
    lines = []
    t = sec.get("throughput", {})
    if t.get("status") == "ok":
        lines += ["", "## Throughput (events/s; the slides' A100 anchor and the H200 target beside)", ""]
        lines += table(["task", "dtype", "batch", "events/s", "ms/event", "peak GB", "A100 anchor", "H200 target", "note"],
                       [[r["task"], r["dtype"], r.get("batch", ""), r.get("events_per_s", ""), r.get("ms_per_event", ""),
                         r.get("peak_gb", ""), anchors.get(r["task"], {}).get("events_per_s", ""),
                         targets.get(r["task"], ""), r.get("stopped") or r.get("error", "")] for r in t["rows"]])
    p = sec.get("pretrain", {})
    if p.get("status") == "ok":
        a = p.get("anchor_a100", {})
        lines += ["", f"## Pretraining step ({p['config']}; A100 anchor: batch {a.get('batch')}, {a.get('step_s')} s, "
                  f"{a.get('peak_gb')} GB)", ""]
        lines += table(["batch", "step s", "events/s", "peak GB", "note"],
                       [[r["batch"], r.get("step_s", ""), r.get("events_per_s", ""), r.get("peak_gb", ""),
                         r.get("stopped", "")] for r in p["rows"]])
    f = sec.get("profile", {})
    if f.get("status") == "ok":
        lines += ["", f"## Profile (semantic forward, batch {f['batch']}, fp32, self {f['clock']} time)", ""]
        lines += table(["op", "calls", "self ms", "share"],
                       [[r["op"], r["calls"], r["self_ms"], r["share"]] for r in f["top_ops"]])
    d = sec.get("device_tests", {})
    if d.get("tests"):
        lines += ["", "## Device tests", ""]
        lines += table(["test", "outcome", "s", "message"],
                       [[x["name"], x["outcome"], x["time_s"], x.get("message", "")] for x in d["tests"]])
    return lines


def markdown(report: dict) -> str:
    """The Markdown report of a (possibly partial) ``gpu_check.json`` dict."""
    sec = report["sections"]
    lines = [f"# GPU check ({report['device']}{', quick' if report['quick'] else ''})", "",
             f"Started {report['started']}; " + (f"wall {report['wall_s']} s." if "wall_s" in report else
                                                 "unfinished (a section is running, or the run was stopped)."), ""]
    lines += table(["section", "status", "wall s", "result"],
                   [[n, sec[n]["status"], sec[n].get("wall_s"), md_summary(n, sec[n])] for n in SECTIONS if n in sec])
    return "\n".join(lines + detail_tables(report)) + "\n"
