"""The thread policy (`larpanda.threads`): decisions, what the machine tells it, and that the CLI applies it
before torch is imported."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from larpanda import threads as T
from larpanda.errors import UserError

ALONE = {}


# ------------------------------------------------------------------------------------------ choose_threads


def test_alone_takes_every_core_with_a_short_spin():
    plan = T.choose_threads(2, 0.1, None, ALONE)
    assert (plan.num_threads, plan.wait_policy, plan.spin_count) == (2, None, T.SPIN_COUNT)
    assert plan.reason.startswith("alone")
    assert T.choose_threads(8, None, None, ALONE).num_threads == 8  # load not measured: as if alone


@pytest.mark.parametrize("usable,load,threads", [
    (2, 0.5, 1),    # the threshold itself counts as shared
    (2, 1.9, 1),    # another 2-thread job on 2 cores
    (2, 5.0, 1),    # more busy than there are cores: still one thread
    (16, 4.2, 11),  # rounds down: the busy fraction is left to the others
    (4, 1.0, 3),
])
def test_shared_cores_take_the_free_ones_and_sleep_when_idle(usable, load, threads):
    plan = T.choose_threads(usable, load, None, ALONE)
    assert plan.num_threads == threads
    assert (plan.wait_policy, plan.spin_count) == ("PASSIVE", None)
    assert plan.reason.startswith("shared")


def test_just_below_the_threshold_is_alone():
    assert T.choose_threads(2, T.BUSY_THRESHOLD - 0.01, None, ALONE).num_threads == 2


def test_threads_option_wins_over_every_environment_setting():
    env = {"LARPANDA_THREADS": "1", "OMP_NUM_THREADS": "1"}
    plan = T.choose_threads(2, 1.9, 2, env)
    assert plan.num_threads == 2 and plan.reason.startswith("--threads=2")
    assert plan.wait_policy == "PASSIVE"  # 2 threads beside 1.9 busy CPUs: still oversubscribed


def test_larpanda_threads_wins_over_omp_num_threads():
    plan = T.choose_threads(2, 0.0, None, {"LARPANDA_THREADS": "1", "OMP_NUM_THREADS": "2"})
    assert plan.num_threads == 1 and plan.reason.startswith("LARPANDA_THREADS=1")


def test_omp_num_threads_is_left_to_torch():
    # torch reads OMP_NUM_THREADS itself at import: the plan must not set a count (not even on a busy machine)
    plan = T.choose_threads(2, 1.9, None, {"OMP_NUM_THREADS": "2"})
    assert plan.num_threads is None and plan.wait_policy == "PASSIVE"
    assert T.explicit_threads(None, {"OMP_NUM_THREADS": "4,2"}) == (4, "OMP_NUM_THREADS")  # nested levels


def test_asking_for_more_threads_than_cores_is_oversubscribed():
    plan = T.choose_threads(2, 0.0, 4, ALONE)
    assert plan.num_threads == 4 and plan.wait_policy == "PASSIVE"


@pytest.mark.parametrize("name", ["OMP_WAIT_POLICY", "GOMP_SPINCOUNT"])
def test_users_wait_setting_is_kept_while_the_count_still_adapts(name):
    plan = T.choose_threads(2, 1.9, None, {name: "ACTIVE" if name == "OMP_WAIT_POLICY" else "0"})
    assert (plan.num_threads, plan.wait_policy, plan.spin_count) == (1, None, None)
    assert "as set in the environment" in plan.reason


def test_policy_off_changes_nothing():
    for value in ("off", "OFF", "0", "false"):
        plan = T.choose_threads(2, 1.9, None, {"LARPANDA_THREADS_POLICY": value})
        assert (plan.num_threads, plan.wait_policy, plan.spin_count) == (None, None, None)
    assert T.choose_threads(2, 0.0, None, {"LARPANDA_THREADS_POLICY": "auto"}).num_threads == 2


@pytest.mark.parametrize("requested,env,what", [
    (0, {}, "--threads"),
    (None, {"LARPANDA_THREADS": "x"}, "LARPANDA_THREADS"),
    (None, {"LARPANDA_THREADS": "0"}, "LARPANDA_THREADS"),
    (None, {"OMP_NUM_THREADS": "two"}, "OMP_NUM_THREADS"),
    (None, {"LARPANDA_THREADS_POLICY": "sometimes"}, "LARPANDA_THREADS_POLICY"),
])
def test_bad_settings_are_user_errors(requested, env, what):
    with pytest.raises(UserError, match=what):
        T.choose_threads(2, 0.0, requested, env)


def test_local_ranks_share_the_cores():
    assert T.choose_threads(4, 0.0, None, {"LOCAL_WORLD_SIZE": "2"}).num_threads == 2
    assert T.choose_threads(2, 0.0, None, {"LOCAL_WORLD_SIZE": "4"}).num_threads == 1
    plan = T.choose_threads(8, 2.0, None, {"LOCAL_WORLD_SIZE": "2"})
    assert plan.num_threads == 3 and plan.wait_policy == "PASSIVE"  # (8 - 2) / 2 ranks


# ------------------------------------------------------------------------------------------ the machine


def test_affinity_smaller_than_cpu_count(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {3}, raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    monkeypatch.setattr(T, "cgroup_quota", lambda: None)
    n, cpus = T.usable_cpus()
    assert (n, cpus) == (1, [3])


def test_hyperthreads_count_once(tmp_path):
    for cpu, (pkg, core) in enumerate([(0, 0), (0, 0), (0, 1), (1, 0)]):  # cpu0/cpu1 are siblings
        topo = tmp_path / f"cpu{cpu}" / "topology"
        topo.mkdir(parents=True)
        (topo / "physical_package_id").write_text(f"{pkg}\n")
        (topo / "core_id").write_text(f"{core}\n")
    assert T.physical_cores([0, 1, 2, 3], tmp_path) == 3
    assert T.physical_cores([0, 1], tmp_path) == 1
    assert T.physical_cores([0, 7], tmp_path) == 2  # unreadable topology: every logical CPU counts


def test_quota_rounds_down_the_usable_cores(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)
    monkeypatch.setattr(T, "physical_cores", lambda cpus: len(cpus))
    for quota, usable in ((1.5, 1), (0.5, 1), (2.0, 2), (16.0, 4), (None, 4)):
        monkeypatch.setattr(T, "cgroup_quota", lambda q=quota: q)
        assert T.usable_cpus()[0] == usable


def test_cgroup_v2_quota_is_the_smallest_on_the_path(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "b" / "cpu.max").write_text("max 100000\n")
    (tmp_path / "a" / "cpu.max").write_text("150000 100000\n")
    proc = tmp_path / "cgroup"
    proc.write_text("0::/a/b\n")
    assert T.cgroup_quota(tmp_path, proc) == 1.5
    (tmp_path / "a" / "b" / "cpu.max").write_text("50000 100000\n")
    assert T.cgroup_quota(tmp_path, proc) == 0.5
    proc.write_text("0::/\n")
    assert T.cgroup_quota(tmp_path, proc) is None


def test_cgroup_v1_quota(tmp_path):
    d = tmp_path / "cpu,cpuacct" / "docker" / "x"
    d.mkdir(parents=True)
    (d / "cpu.cfs_quota_us").write_text("200000\n")
    (d / "cpu.cfs_period_us").write_text("100000\n")
    proc = tmp_path / "cgroup"
    proc.write_text("5:memory:/docker/x\n4:cpu,cpuacct:/docker/x\n")
    assert T.cgroup_quota(tmp_path, proc) == 2.0
    (d / "cpu.cfs_quota_us").write_text("-1\n")
    assert T.cgroup_quota(tmp_path, proc) is None
    assert T.cgroup_quota(tmp_path, tmp_path / "missing") is None


def test_busy_cpus_from_two_proc_stat_samples():
    head = "cpu  100 0 0 100 0 0 0 0 0 0\n"
    before = T.parse_proc_stat(head + "cpu0 10 0 0 50 0 0 0 0 0 0\ncpu1 10 0 0 50 0 0 0 0 0 0\n")
    # cpu0: 4 busy ticks (3 user + 1 system); cpu1: 3 idle + 1 iowait
    after = T.parse_proc_stat(head + "cpu0 13 0 1 50 0 0 0 0 0 0\ncpu1 10 0 0 53 1 0 0 0 0 0\n")
    assert before[0] == (60, 50) and after[1] == (64, 54)
    assert T.busy_cpus(before, after, [0, 1]) == pytest.approx(1.0)
    assert T.busy_cpus(before, after, [1]) == pytest.approx(0.0)   # only the CPUs we may use count
    assert T.busy_cpus(before, after, [0, 1], own_ticks=2) == pytest.approx(0.5)  # our own time is not others'
    assert T.busy_cpus(before, before, [0, 1]) is None              # no tick passed


def test_other_load_is_cheap_and_sane():
    import time

    t = time.perf_counter()
    load = T.other_load(sorted(os.sched_getaffinity(0)))
    assert time.perf_counter() - t < 0.05 + 0.02
    assert load is None or 0.0 <= load <= len(os.sched_getaffinity(0))


# ------------------------------------------------------------------------------------------ applying


def test_apply_after_torch_import_sets_only_the_count(monkeypatch):
    import torch

    monkeypatch.setattr(T, "_applied", None)
    for name in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "LARPANDA_THREADS_POLICY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("LARPANDA_THREADS", "1")
    before = torch.get_num_threads()
    try:
        plan = T.apply_thread_policy()
        assert torch.get_num_threads() == 1 and plan.num_threads == 1
        assert plan.spin_count is None and "torch was already imported" in plan.reason
        assert "GOMP_SPINCOUNT" not in os.environ and "OMP_NUM_THREADS" not in os.environ
        assert T.apply_thread_policy() is plan  # once per process
    finally:
        torch.set_num_threads(before)


_PROBE = """
import json, sys
import larpanda.threads as T
seen = []
apply = T.apply_thread_policy
def spy(requested=None):
    seen.append(sorted(m for m in ("torch", "h5py") if m in sys.modules))
    return apply(requested)
T.apply_thread_policy = spy
from larpanda.cli import main
rc = main(sys.argv[1:])
import torch
print(json.dumps({"rc": rc, "seen": seen, "torch_threads": torch.get_num_threads(), "plan": T._applied.reason}))
"""


def test_cli_applies_the_policy_before_torch_is_imported(tmp_path, fixture_pilarnet_event):
    from larpanda.data.pilarnet import write_events

    path = tmp_path / "one.h5"
    write_events(path, [fixture_pilarnet_event])
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OMP_", "GOMP_", "LARPANDA_THREADS"))}
    env["LARPANDA_THREADS"] = "1"  # through OMP_NUM_THREADS set before torch loads libgomp, not set_num_threads
    out = subprocess.run([sys.executable, "-c", _PROBE, "info", str(path), "--json"], env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert res["seen"] == [[]], "torch (or h5py) was imported before the thread policy ran"
    assert res["torch_threads"] == 1 and res["plan"].startswith("LARPANDA_THREADS=1")


def test_dataloader_workers_run_one_thread():
    import torch

    from larpanda.train.data import batch_stream

    class Threads(torch.utils.data.Dataset):
        def __len__(self):
            return 4

        def __getitem__(self, i):
            return torch.get_num_threads()

    before = torch.get_num_threads()
    torch.set_num_threads(2)  # the parent's count must not reach the worker
    stream = batch_stream(Threads(), 2, 0, 0, list, num_workers=1)
    try:
        _, batch = next(stream)
    finally:
        stream.close()
        torch.set_num_threads(before)
    assert batch == [1, 1]
