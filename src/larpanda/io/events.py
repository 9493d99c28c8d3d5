"""Running a model on one event: the energy cut and transforms, the inference memory guard, eval mode, and
outputs put back in the event's own row order. Shared by the backbone's and the task models' ``embed`` and
``predict``."""

from __future__ import annotations

import numpy as np
import torch

from .memory import check_model


def run_on_event(model, event, energy_threshold: float, fn):
    """``(d, fn(point))``: ``d`` is `larpanda.data.transforms.prepare` of ``event`` (``d["index"]`` = the raw
    row of each kept point), ``point`` its collated batch on the model's device; ``fn`` runs in eval mode
    without gradients (the model's mode is restored). An event above the inference memory limit raises
    `larpanda.io.memory.InferenceMemoryError` before any forward pass."""
    from ..data.point import collate
    from ..data.transforms import prepare

    d = prepare(event, energy_threshold=energy_threshold)
    check_model(model, d, source=event.source)
    point = collate([d]).to(next(model.parameters()).device)
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = fn(point)
    finally:
        model.train(was)
    return d, out


def embed_event(model, event, energy_threshold: float, features) -> np.ndarray:
    """(N_kept, C) float32 features ``features(point)`` of the points that pass the cut, in raw row order."""
    d, feat = run_on_event(model, event, energy_threshold, features)
    return feat.float().cpu().numpy()[np.argsort(d["index"], kind="stable")]
