"""Data parallelism under ``torchrun`` (gloo on CPU, nccl on GPU) with no home-made launcher.

``init_from_env()`` reads the torchrun variables (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT) and
initialises the default process group once. Gradients are averaged by one flattened all-reduce per
step (``all_reduce_grads``): it handles parameters without a gradient on some ranks (unused heads)
and gives the same update as a single process with the global batch.
"""

from __future__ import annotations

import gc
import os

import torch
import torch.distributed as dist


def is_dist() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_dist() else 0


def world_size() -> int:
    return dist.get_world_size() if is_dist() else 1


def is_main() -> bool:
    return rank() == 0


def init_from_env(device: str | None = None) -> bool:
    """Initialise the process group from torchrun's environment; no-op (False) for a single process."""
    if is_dist():
        return True
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    use_cuda = (device or ("cuda" if torch.cuda.is_available() else "cpu")).startswith("cuda")
    if use_cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return True


def cleanup() -> None:
    """Tear the process group down: barrier (no rank may leave while another still talks to it), destroy,
    then collect garbage, so gloo's objects die while the interpreter is fully alive. Without the collect,
    about 1 exit in 30 aborted with SIGABRT ("terminate called without an active exception") during
    interpreter finalization (measured: 2-process toy fit, 1/30 aborts before, 0/100 after)."""
    if is_dist():
        dist.barrier()
        dist.destroy_process_group()
        gc.collect()


def barrier() -> None:
    if is_dist():
        dist.barrier()


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """In-place SUM over ranks (identity for one process); returns ``t``."""
    if is_dist():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def all_reduce_grads(params: list[torch.Tensor]) -> None:
    """Average ``.grad`` over ranks with one flattened all-reduce. Missing grads count as zeros (and
    are created if another rank produced one) so every rank applies the identical update."""
    if not is_dist():
        return
    ws = world_size()
    flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1).float() for p in params])
    has = torch.tensor([float(any(p.grad is not None for p in params))], device=flat.device)
    dist.all_reduce(flat)
    dist.all_reduce(has)
    flat /= ws
    i = 0
    for p in params:
        n = p.numel()
        g = flat[i : i + n].view_as(p).to(p.dtype)
        if p.grad is None:
            p.grad = g.clone()
        else:
            p.grad.copy_(g)
        i += n


def any_flag(flag: bool, device="cpu") -> bool:
    """True if ``flag`` is True on any rank (used for non-finite losses and stop signals)."""
    if not is_dist():
        return bool(flag)
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t)
    return bool(t.item() > 0)


def all_gather_object(obj) -> list:
    if not is_dist():
        return [obj]
    out = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj, src: int = 0):
    if not is_dist():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]
