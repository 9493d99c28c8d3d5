"""train.amp on CPU: bf16 autocast only when asked for (amp bf16 + amp_cpu true, or amp_cpu "auto" on a CPU
with native bf16), never for fp16.

The "auto" case depends on the machine's CPU, so `cpu_bf16_supported` is monkeypatched to True and to
False: the expected result is fixed by the test, not recomputed with the function the code under test
calls."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from toy import ToyDataset, ToyTask  # noqa: E402

from larpanda.train import fit
from larpanda.train import trainer

CPU = torch.device("cpu")


def _cpu_dtype():
    if hasattr(torch, "get_autocast_dtype"):
        return torch.get_autocast_dtype("cpu")
    return torch.get_autocast_cpu_dtype()  # pragma: no cover - torch < 2.4


def assert_bf16_cpu_autocast(ctx):
    assert isinstance(ctx, torch.autocast), f"expected torch.autocast, got {type(ctx).__name__}"
    assert ctx.device == "cpu" and ctx.fast_dtype == torch.bfloat16
    assert not torch.is_autocast_enabled("cpu")
    with ctx:
        assert torch.is_autocast_enabled("cpu")
        assert _cpu_dtype() == torch.bfloat16
        a = torch.randn(4, 4)
        assert (a @ a).dtype == torch.bfloat16  # matmuls really run in bf16
    assert not torch.is_autocast_enabled("cpu")


def assert_no_autocast(ctx):
    assert not isinstance(ctx, torch.autocast), "expected no autocast"
    assert isinstance(ctx, contextlib.nullcontext)
    with ctx:
        assert not torch.is_autocast_enabled("cpu")
        a = torch.randn(4, 4)
        assert (a @ a).dtype == torch.float32


@pytest.fixture
def bf16_cpu(monkeypatch):
    """Set what `cpu_bf16_supported` answers inside `larpanda.train.trainer`; records the calls."""
    calls = []

    def set_(value: bool):
        def fake():
            calls.append(value)
            return value

        monkeypatch.setattr(trainer, "cpu_bf16_supported", fake)
        return calls

    return set_


def test_auto_autocasts_when_the_cpu_has_native_bf16(bf16_cpu):
    calls = bf16_cpu(True)
    assert_bf16_cpu_autocast(trainer._autocast(CPU, "bf16", "auto"))
    assert calls, "amp_cpu 'auto' must ask cpu_bf16_supported"


def test_auto_does_not_autocast_without_native_bf16(bf16_cpu):
    calls = bf16_cpu(False)
    assert_no_autocast(trainer._autocast(CPU, "bf16", "auto"))
    assert calls, "amp_cpu 'auto' must ask cpu_bf16_supported"


@pytest.mark.parametrize("supported", [True, False])
def test_explicit_true_autocasts_whatever_the_cpu(bf16_cpu, supported):
    bf16_cpu(supported)
    assert_bf16_cpu_autocast(trainer._autocast(CPU, "bf16", True))


@pytest.mark.parametrize("supported", [True, False])
@pytest.mark.parametrize("amp,amp_cpu", [
    ("bf16", False),   # amp asked for, but not on CPU
    (False, True),     # amp off
    (False, "auto"),
    ("fp16", True),    # fp16 never autocasts on CPU
    ("fp16", "auto"),
    ("float16", True),
])
def test_no_cpu_autocast(bf16_cpu, supported, amp, amp_cpu):
    bf16_cpu(supported)
    assert_no_autocast(trainer._autocast(CPU, amp, amp_cpu))


class _Recorder(ToyTask):
    def training_step(self, batch, step):
        self.autocast_seen = getattr(self, "autocast_seen", []) + [
            (torch.is_autocast_enabled("cpu"), _cpu_dtype() if torch.is_autocast_enabled("cpu") else None)]
        return super().training_step(batch, step)


@pytest.mark.parametrize("supported,amp,amp_cpu,expect", [
    (True, "bf16", "auto", True),
    (False, "bf16", "auto", False),
    (False, "bf16", True, True),
    (True, "bf16", False, False),
    (True, "fp16", True, False),
])
def test_fit_runs_the_training_step_under_that_autocast(tmp_path, bf16_cpu, supported, amp, amp_cpu, expect):
    bf16_cpu(supported)
    torch.manual_seed(0)
    task = _Recorder()
    fit(task, ToyDataset(n=8), {"max_steps": 2, "batch_size": 4, "lr": 1e-2, "amp": amp, "amp_cpu": amp_cpu,
                                "device": "cpu"}, tmp_path / "run")
    want = (True, torch.bfloat16) if expect else (False, None)
    assert task.autocast_seen == [want, want]
