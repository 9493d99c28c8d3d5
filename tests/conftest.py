"""Shared test fixtures: paths to the shipped reference files."""

from __future__ import annotations

import os
from pathlib import Path

# Idle OpenMP threads sleep rather than spin (set before torch is first imported): tests start
# several torch processes (DDP ranks, the demo) on 2 cores, where spinning pools made them 5-15x slower.
# Not the package default: on a dedicated machine PASSIVE made pretraining 1.8x slower (docs/benchmarks.md).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
# The reference fixtures ship in tests/fixtures (copied from the project's shared/fixtures).
FIXTURES = REPO / "tests" / "fixtures"


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    return FIXTURES


@pytest.fixture(scope="session")
def fixture_pilarnet_event():
    """The real PILArNet-M test event (``pilarnet_m_test_event0_recon.npz``) as a `larpanda.data.pilarnet`
    event with all its labels; tests write it to their own files."""
    import numpy as np

    from larpanda.data.pilarnet import event_from_labels

    z = np.load(FIXTURES / "pilarnet_m_test_event0_recon.npz")
    i64 = lambda k: z[k].astype(np.int64)  # noqa: E731
    return event_from_labels(i64("voxel"), z["energy"], i64("segment_motif"), i64("segment_pid"),
                             i64("instance_particle"), i64("instance_interaction"))


@pytest.fixture(scope="session")
def device():
    """Torch device of the ``device``-marked tests: env ``LARPANDA_TEST_DEVICE`` (default "cpu";
    ``benchmarks/gpu_check.py`` sets "cuda"). Skips the test when CUDA is asked for but not available."""
    import torch

    name = os.environ.get("LARPANDA_TEST_DEVICE", "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        pytest.skip(f"LARPANDA_TEST_DEVICE={name} but CUDA is not available")
    return torch.device(name)


@pytest.fixture(autouse=True, scope="session")
def _threads():
    import torch

    torch.set_num_threads(int(os.environ.get("LARPANDA_TEST_THREADS", "2")))


@pytest.fixture
def one_thread():
    """Run a test on one torch thread (many small ops: avoids oversubscription stalls on 2 shared cores)."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
