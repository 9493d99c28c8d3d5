"""train.amp on CPU: autocast only when asked for (amp bf16 + amp_cpu), never for fp16."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from toy import ToyDataset, ToyTask  # noqa: E402

from larpanda.train import fit
from larpanda.train.trainer import _autocast, cpu_bf16_supported


class _Recorder(ToyTask):
    def training_step(self, batch, step):
        self.autocast_seen = getattr(self, "autocast_seen", []) + [torch.is_autocast_enabled("cpu")]
        return super().training_step(batch, step)


@pytest.mark.parametrize("amp,amp_cpu,expect", [
    (False, True, False), ("bf16", False, False), ("bf16", True, True), ("fp16", True, False),
    ("bf16", "auto", None),
])
def test_cpu_autocast_only_when_requested(tmp_path, amp, amp_cpu, expect):
    if expect is None:
        expect = cpu_bf16_supported()
    with _autocast(torch.device("cpu"), amp, amp_cpu):
        assert torch.is_autocast_enabled("cpu") == expect
    torch.manual_seed(0)
    task = _Recorder()
    fit(task, ToyDataset(n=8), {"max_steps": 2, "batch_size": 4, "lr": 1e-2, "amp": amp, "amp_cpu": amp_cpu,
                                "device": "cpu"}, tmp_path / "run")
    assert task.autocast_seen == [expect, expect]
