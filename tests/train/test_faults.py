"""Process-level tests: 2-process gloo data parallel == 1 process, SIGKILL mid-checkpoint, SIGTERM."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import torch
import torch.multiprocessing as mp

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
from toy import ToyDataset, ToyTask  # noqa: E402

from larpanda.train import fit, load_checkpoint  # noqa: E402

CFG = {"max_steps": 4, "lr": 1e-2, "log_every": 1, "ckpt_every": 2, "grad_clip": 1.0, "weight_decay_end": 0.2}


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank, world, port, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    from larpanda.train import distributed as D

    torch.manual_seed(rank)  # different init per rank: the engine must broadcast rank 0's
    task = ToyTask(dropout=0.0)
    fit(task, ToyDataset(), {**CFG, "batch_size": 2}, out)
    if rank == 0:
        torch.save({k: v.clone() for k, v in task.state_dict().items()}, Path(out) / "final.pt")
    D.cleanup()


def test_ddp_two_processes_equal_single(tmp_path):
    torch.manual_seed(0)
    single = ToyTask(dropout=0.0)
    fit(single, ToyDataset(), {**CFG, "batch_size": 4}, tmp_path / "single")
    mp.spawn(_ddp_worker, args=(2, _free_port(), str(tmp_path / "ddp")), nprocs=2, join=True)
    ddp = torch.load(tmp_path / "ddp" / "final.pt", weights_only=True)
    torch.manual_seed(0)
    init = ToyTask(dropout=0.0).state_dict()
    for k, v in single.state_dict().items():
        torch.testing.assert_close(ddp[k], v, atol=1e-5, rtol=0)
        if v.dtype.is_floating_point and k.startswith("net"):
            assert not torch.allclose(v, init[k]), f"{k} did not train"
    ck = load_checkpoint(tmp_path / "ddp" / "checkpoints" / "last.pt")
    assert ck["world_size"] == 2 and len(ck["rng"]) == 2 and ck["global_batch"] == 4


SLOW_SAVE = textwrap.dedent(
    """
    import io, sys, time, torch
    from larpanda.train import trainer
    path = sys.argv[1]
    trainer.save_checkpoint(path, {"step": 1, "w": torch.ones(1000)})
    real_save = torch.save
    def slow_save(obj, f):
        buf = io.BytesIO(); real_save(obj, buf); data = buf.getvalue()
        with open(f, "wb") as fh:
            fh.write(data[: len(data) // 2]); fh.flush()
            print("MID", flush=True)
            time.sleep(60)
            fh.write(data[len(data) // 2 :])
    torch.save = slow_save
    trainer.save_checkpoint(path, {"step": 2, "w": torch.zeros(200000)})
    """
)


def test_sigkill_during_checkpoint_write_keeps_previous(tmp_path):
    last = tmp_path / "checkpoints" / "last.pt"
    p = subprocess.Popen([sys.executable, "-c", SLOW_SAVE, str(last)], stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "MID"
        temps = [f for f in last.parent.iterdir() if f.name != "last.pt"]
        assert temps, "the second write should be in progress in a temp file"
        p.send_signal(signal.SIGKILL)
        p.wait(10)
    finally:
        if p.poll() is None:
            p.kill()
    ck = load_checkpoint(last)
    assert ck["step"] == 1 and torch.equal(ck["w"], torch.ones(1000))


SIGTERM_RUN = textwrap.dedent(
    """
    import sys, time, torch
    sys.path.insert(0, sys.argv[2])
    from toy import ToyDataset, ToyTask
    from larpanda.train import fit
    torch.set_num_threads(1)
    class Slow(ToyTask):
        def training_step(self, batch, step):
            time.sleep(0.02)
            return super().training_step(batch, step)
    r = fit(Slow(), ToyDataset(), {"max_steps": 5000, "batch_size": 4, "log_every": 1, "ckpt_every": 100000}, sys.argv[1])
    print("INTERRUPTED" if r["interrupted"] else "DONE", r["step"], flush=True)
    """
)


def test_sigterm_saves_and_exits(tmp_path):
    run = tmp_path / "run"
    p = subprocess.Popen([sys.executable, "-c", SIGTERM_RUN, str(run), str(HERE)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        metrics = run / "metrics.jsonl"
        t0 = time.time()
        while time.time() - t0 < 60:
            if metrics.exists() and len(metrics.read_text().splitlines()) >= 3:
                break
            time.sleep(0.1)
        p.send_signal(signal.SIGTERM)
        out, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 0, err
    word, step = out.split()
    assert word == "INTERRUPTED" and 3 <= int(step) < 5000
    ck = load_checkpoint(run / "checkpoints" / "last.pt")
    assert ck["step"] == int(step)
    assert "stopped by signal" in err
