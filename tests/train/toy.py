"""A toy task and dataset for engine tests: an MLP classifying points of random events."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


class ToyDataset(torch.utils.data.Dataset):
    """Events of 20–40 points; the label is a deterministic function of the features.
    ``augment`` adds per-item numpy noise, to check that augmentation RNG is reproducible."""

    def __init__(self, n=16, seed=0, augment=True, nan_items=()):
        rng = np.random.default_rng(seed)
        self.events = []
        for _ in range(n):
            k = int(rng.integers(20, 40))
            feat = rng.normal(size=(k, 4)).astype(np.float32)
            seg = (feat[:, 0] + 0.5 * feat[:, 3] > 0).astype(np.int64) + (feat[:, 1] > 1).astype(np.int64)
            self.events.append((feat, seg))
        self.augment, self.nan_items = augment, set(nan_items)

    def __len__(self):
        return len(self.events)

    def __getitem__(self, i):
        feat, seg = self.events[i]
        feat = feat.copy()
        if self.augment:
            feat += np.random.normal(scale=0.05, size=feat.shape).astype(np.float32)
        if i in self.nan_items:
            feat[0, 0] = np.nan
        return {"coord": feat[:, :3].copy(), "feat": feat, "segment": seg, "offset": np.array([len(seg)])}


class ToyTask(nn.Module):
    """Per-event mean cross-entropy averaged over events (so a global batch split over ranks gives the
    same gradient). Dropout exercises the torch RNG; an EMA copy exercises ``on_step_end``."""

    def __init__(self, hidden=32, dropout=0.1):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(4, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, 3))
        self.ema = nn.Linear(4, hidden)
        self.ema.requires_grad_(False)
        self.steps_seen = []

    def training_step(self, batch, step):
        logits = self.net(batch.feat)
        per_point = nn.functional.cross_entropy(logits, batch.segment, reduction="none")
        b = batch.batch
        per_event = torch.zeros(int(b.max()) + 1).index_add(0, b, per_point) / torch.bincount(b).float()
        loss = per_event.mean()
        return loss, {"acc": float((logits.argmax(1) == batch.segment).float().mean())}

    def on_step_end(self, step, total):
        self.steps_seen.append(step)
        with torch.no_grad():
            self.ema.weight.mul_(0.9).add_(0.1 * self.net[0].weight)
