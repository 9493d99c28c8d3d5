"""How many torch threads to run, and how idle OpenMP threads wait, when CPU cores may be shared.

torch's CPU kernels run on a GNU OpenMP (libgomp) pool. An idle pool thread busy-waits ("spins") for
``GOMP_SPINCOUNT`` iterations (300,000 by default: 8 ms on the development machine, 26 ns per ``pause``)
before it sleeps. Alone on its cores that saves a wake-up at every parallel region; beside another busy
process it is ruinous: a thread waiting at a barrier for a descheduled team mate burns the time slice the
other process needed (a quick demo took 4.7x its time alone beside a training run, where 2x is a fair
share; docs/benchmarks.md "Shared cores: thread policy"). `choose_threads` decides; `apply_thread_policy`
measures and applies, once per process, in the CLI entry before torch is imported (libgomp reads its
environment when it is loaded, at ``import torch``):

* alone (other processes keep < 0.5 of the usable CPUs busy): one thread per usable core and a short spin,
  ``GOMP_SPINCOUNT=10000`` (0.26 ms): as fast as the default alone (measured), and a process that starts
  beside us later loses little to our waiting threads;
* shared (others keep >= 0.5 CPUs busy): the free cores' worth of threads, rounded down, at least 1, and
  ``OMP_WAIT_POLICY=PASSIVE`` (idle threads sleep at once; 1.3-1.8x slower than spinning alone, measured).

Explicit settings win: ``--threads N``, then ``LARPANDA_THREADS``, then ``OMP_NUM_THREADS`` fix the thread
count; ``OMP_WAIT_POLICY`` or ``GOMP_SPINCOUNT`` in the environment leave the waiting alone;
``LARPANDA_THREADS_POLICY=off`` disables the policy (torch's defaults). Several ranks of one job on a
machine (``LOCAL_WORLD_SIZE``) share the cores. DataLoader workers run one thread (torch sets it in each
worker); torchrun sets ``OMP_NUM_THREADS=1`` per rank when it starts several. The decision is inherited by
child processes through the environment variables it sets.
"""

from __future__ import annotations

import logging
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from .errors import UserError

log = logging.getLogger("larpanda.threads")

SPIN_COUNT = 10_000
"""``GOMP_SPINCOUNT`` when alone: spin iterations (a ``pause`` each) before an idle OpenMP thread sleeps;
0.26 ms on the development machine against 8 ms for the default 300,000. Alone, 1,000-30,000 were as fast
as the default, 300 was 1.2x slower (docs/benchmarks.md "Shared cores: thread policy")."""

BUSY_THRESHOLD = 0.5
"""Other processes' load, in CPUs, from which the usable CPUs count as shared."""

SAMPLE_S = 0.04
"""Length of the /proc/stat load sample, in seconds (the kernel counts CPU time in 10 ms ticks: 4 per CPU)."""

_OFF = ("off", "0", "false", "no")
_ON = ("", "auto", "on", "1", "true", "yes")


@dataclass(frozen=True)
class ThreadPlan:
    """What to set: ``num_threads`` torch threads (None: leave as is), ``wait_policy`` for
    ``OMP_WAIT_POLICY`` and ``spin_count`` for ``GOMP_SPINCOUNT`` (None: leave as is), and why."""

    num_threads: int | None
    wait_policy: str | None
    spin_count: int | None
    reason: str


def explicit_threads(requested: int | None, env: Mapping[str, str]) -> tuple[int | None, str | None]:
    """The thread count the user asked for and where: ``--threads``, ``LARPANDA_THREADS`` or
    ``OMP_NUM_THREADS`` (its first level), else (None, None). Raises UserError for a bad value."""
    if requested is not None:
        if int(requested) < 1:
            raise UserError(f"--threads must be a positive integer, got {requested}")
        return int(requested), "--threads"
    for name in ("LARPANDA_THREADS", "OMP_NUM_THREADS"):
        raw = env.get(name, "").strip()
        if not raw:
            continue
        first = raw.split(",")[0].strip()  # OMP_NUM_THREADS may list nested levels ("4,2")
        if not first.isdigit() or int(first) < 1:
            raise UserError(f"{name} must be a positive integer, got {raw!r}")
        return int(first), name
    return None, None


def policy_enabled(env: Mapping[str, str]) -> bool:
    """False when ``LARPANDA_THREADS_POLICY`` is off (off/0/false/no); raises UserError for an unknown value."""
    value = env.get("LARPANDA_THREADS_POLICY", "").strip().lower()
    if value in _OFF:
        return False
    if value in _ON:
        return True
    raise UserError(f"LARPANDA_THREADS_POLICY must be 'auto' or 'off', got {value!r}")


def choose_threads(usable_cpus: int, other_load: float | None, requested: int | None,
                   env: Mapping[str, str]) -> ThreadPlan:
    """The thread plan of a process that may use ``usable_cpus`` cores (affinity and quota) while other
    processes keep ``other_load`` CPUs of them busy (None: not measured, taken as 0). ``requested``: the
    ``--threads`` option. Pure: reads only its arguments."""
    if not policy_enabled(env):
        return ThreadPlan(None, None, None, "policy off (LARPANDA_THREADS_POLICY): torch's defaults")
    usable = max(1, int(usable_cpus))
    ranks = max(1, int(env.get("LOCAL_WORLD_SIZE") or 1))
    load = max(0.0, float(other_load or 0.0))
    n, source = explicit_threads(requested, env)
    share = max(1, usable // ranks)
    shared = load >= BUSY_THRESHOLD
    where = f"{usable} usable CPUs" + (f" for {ranks} local ranks" if ranks > 1 else "") + \
        ("" if other_load is None else f", {load:.1f} busy with other processes")
    if n is None:  # leave the busy fraction to the others: 0.6 busy of 2 CPUs -> 1 thread
        threads = min(share, max(1, math.floor((usable - load) / ranks))) if shared else share
        why = ("shared" if shared else "alone") + f": {where}: {threads} thread" + "s" * (threads > 1)
    else:
        threads = n
        why = f"{source}={n}: {where}"
    if "OMP_WAIT_POLICY" in env or "GOMP_SPINCOUNT" in env:
        wait, spin, why = None, None, why + "; OpenMP waiting as set in the environment"
    elif shared or threads * ranks > usable:
        wait, spin, why = "PASSIVE", None, why + "; passive OpenMP waiting"
    else:
        wait, spin, why = None, SPIN_COUNT, why + f"; OpenMP spin {SPIN_COUNT} before sleeping"
    return ThreadPlan(threads if source != "OMP_NUM_THREADS" else None, wait, spin, why)


# ------------------------------------------------------------------------------------------ measuring


def parse_cpu_max(text: str) -> float | None:
    """CPUs allowed by a cgroup v2 ``cpu.max`` ("200000 100000" -> 2.0; "max 100000": no quota, None)."""
    parts = text.split()
    if len(parts) != 2 or parts[0] == "max" or int(parts[1]) <= 0:
        return None
    return int(parts[0]) / int(parts[1])


def parse_cfs_quota(quota: str, period: str) -> float | None:
    """CPUs allowed by a cgroup v1 ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us`` pair (quota -1: none, None)."""
    q, p = int(quota), int(period)
    return q / p if q > 0 and p > 0 else None


def cgroup_quota(root: Path = Path("/sys/fs/cgroup"), proc_cgroup: Path = Path("/proc/self/cgroup")):
    """The smallest CPU quota (in CPUs) on this process's cgroup path (v2 ``cpu.max``, v1 ``cpu`` controller),
    each level from the process's cgroup up to the root; None when there is none or it cannot be read."""
    quotas = []
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        hid, controllers, path = (line.split(":", 2) + ["", ""])[:3]
        v2 = hid == "0" and controllers == ""
        if not v2 and "cpu" not in controllers.split(","):
            continue
        base = root if v2 else root / ("cpu" if (root / "cpu").exists() else controllers)
        d = base / path.strip("/")
        while True:
            try:
                if v2:
                    q = parse_cpu_max((d / "cpu.max").read_text())
                else:
                    q = parse_cfs_quota((d / "cpu.cfs_quota_us").read_text(), (d / "cpu.cfs_period_us").read_text())
            except (OSError, ValueError):
                q = None
            if q is not None:
                quotas.append(q)
            if d == base or base not in d.parents:
                break
            d = d.parent
    return min(quotas) if quotas else None


def physical_cores(cpus, sys_cpu: Path = Path("/sys/devices/system/cpu")) -> int:
    """Distinct physical cores among the logical ``cpus`` (hyper-threads count once; torch's default is one
    thread per physical core); ``len(cpus)`` when the topology cannot be read."""
    cores = set()
    try:
        for c in cpus:
            topo = sys_cpu / f"cpu{c}" / "topology"
            cores.add(((topo / "physical_package_id").read_text().strip(), (topo / "core_id").read_text().strip()))
    except OSError:
        return len(cpus)
    return len(cores) or len(cpus)


def usable_cpus() -> tuple[int, list[int]]:
    """(cores this process may use: physical cores of its affinity set, at most the cgroup quota rounded
    down, at least 1; the logical CPUs of the affinity set)."""
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))
    n = physical_cores(cpus)
    quota = cgroup_quota()
    if quota is not None:
        n = min(n, max(1, math.floor(quota)))  # as Go's automaxprocs: a 1.5-CPU quota runs 1 thread
    return max(1, n), cpus


def parse_proc_stat(text: str) -> dict[int, tuple[int, int]]:
    """Per-CPU (total, idle) ticks from /proc/stat's ``cpuN`` lines (idle = idle + iowait)."""
    out = {}
    for line in text.splitlines():
        if line.startswith("cpu") and line[3:4].isdigit():
            name, *vals = line.split()
            v = [int(x) for x in vals]
            out[int(name[3:])] = (sum(v[:8]), v[3] + (v[4] if len(v) > 4 else 0))  # guest is inside user
    return out


def busy_cpus(before: dict, after: dict, cpus, own_ticks: int = 0) -> float | None:
    """CPUs' worth of work done on ``cpus`` between two `parse_proc_stat` samples, less ``own_ticks`` of this
    process's own CPU time; None when no tick passed."""
    common = [c for c in cpus if c in before and c in after]
    total = sum(after[c][0] - before[c][0] for c in common)
    idle = sum(after[c][1] - before[c][1] for c in common)
    if not common or total <= 0:
        return None
    per_cpu = total / len(common)
    return max(0.0, (total - idle - own_ticks) / per_cpu)


def _own_ticks() -> int:
    fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15 of proc(5))


def other_load(cpus, seconds: float = SAMPLE_S) -> float | None:
    """CPUs of ``cpus`` kept busy by other processes, from two /proc/stat samples ``seconds`` apart (None
    where /proc cannot be read). Instantaneous, unlike /proc/loadavg's one-minute average, which still shows
    the previous command of a script for a minute; and per CPU, so only the cores we may run on count."""
    try:
        stat, own = Path("/proc/stat"), _own_ticks()
        before = parse_proc_stat(stat.read_text())
        time.sleep(seconds)
        after = parse_proc_stat(stat.read_text())
        own = _own_ticks() - own
    except (OSError, ValueError, IndexError):
        return None
    return busy_cpus(before, after, cpus, own)


# ------------------------------------------------------------------------------------------ applying

_applied: ThreadPlan | None = None


def apply_thread_policy(requested: int | None = None) -> ThreadPlan:
    """Measure, decide (`choose_threads`) and apply the plan of this process; once per process (a later call
    returns the first plan unless it brings its own ``requested``). Before ``import torch`` the plan goes into
    ``OMP_NUM_THREADS`` / ``OMP_WAIT_POLICY`` / ``GOMP_SPINCOUNT``; after it only the thread count can change
    (``torch.set_num_threads``). Logged on the ``larpanda.threads`` logger (INFO)."""
    global _applied
    if _applied is not None and requested is None:
        return _applied
    env = os.environ
    n_usable, cpus = usable_cpus()
    load = None
    if policy_enabled(env) and explicit_threads(requested, env)[0] != 1:  # one thread never waits
        load = other_load(cpus)
        if load is not None and len(cpus) > n_usable:
            load *= n_usable / len(cpus)  # e.g. a 2-CPU quota on a 64-CPU host: its share of the busy fraction
    plan = choose_threads(n_usable, load, requested, env)
    torch_loaded = "torch" in sys.modules
    if torch_loaded:
        if plan.num_threads is not None:
            sys.modules["torch"].set_num_threads(plan.num_threads)
        if plan.wait_policy or plan.spin_count:
            plan = ThreadPlan(plan.num_threads, None, None,
                              plan.reason + " (not applied: torch was already imported, only the thread count is set)")
    else:
        if plan.num_threads is not None:
            env["OMP_NUM_THREADS"] = str(plan.num_threads)
        if plan.wait_policy:
            env["OMP_WAIT_POLICY"] = plan.wait_policy
        if plan.spin_count is not None:
            env["GOMP_SPINCOUNT"] = str(plan.spin_count)
    log.info("%s", plan.reason)
    _applied = plan
    return plan
