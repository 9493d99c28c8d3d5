"""Training schedules, precomputed as numpy arrays indexed by optimizer step (as DINOv2 does).

Precomputing makes resume trivial (the schedule value is a pure function of the step) and lets a test
compare every value against the reference formulas.
"""

from __future__ import annotations

import math

import numpy as np


def cosine(base: float, final: float, total_steps: int, warmup_steps: int = 0, start_warmup: float = 0.0) -> np.ndarray:
    """DINOv2/pimm ``CosineScheduler``: linear warmup ``start_warmup → base`` over ``warmup_steps``, then a
    cosine from ``base`` to ``final`` over the remaining steps. Returns (total_steps,) float64.

    Used for the weight decay (0.04 → 0.2, no warmup; docs/model.md §2.5), the EMA momentum
    (0.994 → 1.0), the teacher temperature (0.04 → 0.07 over 5 %, then constant) and the mask size/ratio
    (warmup over 5 %, then constant; docs/model.md §2.2).
    """
    total_steps = int(total_steps)
    warmup_steps = int(min(max(warmup_steps, 0), total_steps))
    warm = np.linspace(start_warmup, base, warmup_steps) if warmup_steps > 0 else np.zeros(0)
    n = total_steps - warmup_steps
    it = np.arange(n)
    cos = final + 0.5 * (base - final) * (1 + np.cos(np.pi * it / max(n, 1)))
    out = np.concatenate([warm, cos]).astype(np.float64)
    assert len(out) == total_steps
    return out


def constant(value: float, total_steps: int) -> np.ndarray:
    return np.full(int(total_steps), float(value), dtype=np.float64)


def _annealing_cos(start: float, end: float, pct: float) -> float:
    return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1)


def one_cycle(
    total_steps: int,
    pct_start: float = 0.05,
    div_factor: float = 10.0,
    final_div_factor: float = 1000.0,
    base_momentum: float = 0.85,
    max_momentum: float = 0.95,
) -> tuple[np.ndarray, np.ndarray]:
    """``torch.optim.lr_scheduler.OneCycleLR`` (anneal "cos", three_phase False) as arrays.

    Returns ``(lr_factor, momentum)``, each (total_steps,): the lr of a group at step t is
    ``max_lr_group · lr_factor[t]``; it starts at ``1/div_factor``, rises to 1 at step
    ``pct_start·total − 1`` and decays to ``1/(div_factor·final_div_factor)`` (= 1e-4 with the reference's
    10 and 1000, docs/model.md §2.5). ``momentum`` is AdamW's beta1, cycled 0.95 → 0.85 → 0.95.
    Value-for-value identical to the torch scheduler (tested).
    """
    total_steps = int(total_steps)
    initial = 1.0 / div_factor
    minimum = initial / final_div_factor
    phases = [
        (float(pct_start * total_steps) - 1, initial, 1.0, max_momentum, base_momentum),
        (float(total_steps) - 1, 1.0, minimum, base_momentum, max_momentum),
    ]
    lr = np.empty(total_steps)
    mom = np.empty(total_steps)
    for t in range(total_steps):
        start_step = 0.0
        for i, (end_step, lr0, lr1, m0, m1) in enumerate(phases):
            if t <= end_step or i == len(phases) - 1:
                denom = end_step - start_step
                pct = (t - start_step) / denom if denom != 0 else 1.0
                lr[t] = _annealing_cos(lr0, lr1, pct)
                mom[t] = _annealing_cos(m0, m1, pct)
                break
            start_step = end_step
    return lr, mom
