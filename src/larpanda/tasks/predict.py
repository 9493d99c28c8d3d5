"""``larpanda predict`` and the one writer of per-event outputs (predictions, embeddings) as HDF5.

Layout (docs/design.md): one variable-length dataset per output, row i = input event i, each event's
array flattened row-major with the dataset attribute ``columns`` (values per point); int64 or float32.
"""

from __future__ import annotations

import os
import sys
import time

import numpy as np

from ..errors import UserError


def write_event_arrays(path, arrays: dict, attrs: dict, datasets: dict | None = None) -> None:
    """Write ``arrays`` ({name: [per-event array (n_i,) or (n_i, C)]}) as vlen datasets with a ``columns``
    attribute, plain ``datasets`` ({name: array}) and file ``attrs``, atomically to ``path``."""
    import h5py

    from ..atomic import atomic_path

    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as f:
            f.attrs.update(attrs)
            for name, data in (datasets or {}).items():
                f.create_dataset(name, data=data)
            for name, rows in arrays.items():
                rows = [np.asarray(r) for r in rows]
                dtype = np.float32 if rows and rows[0].dtype.kind == "f" else np.int64
                ds = f.create_dataset(name, (len(rows),), dtype=h5py.vlen_dtype(dtype))
                for i, r in enumerate(rows):
                    ds[i] = r.reshape(-1).astype(dtype)
                ds.attrs["columns"] = max((1 if r.ndim == 1 else int(np.prod(r.shape[1:])) for r in rows), default=1)


def predict_file(model, data, max_events=None, skip_bad_events: bool = False, logits: bool = False):
    """``model.predict`` on every event of ``data``: ({output: [per-event arrays]}, skipped event indices,
    number of events). An event above the inference limits raises, or with ``skip_bad_events`` is logged
    and gets ``model.empty_prediction`` (all its rows read as removed by the cut). ``logits``: also the
    model's per-point logits (``seg_logits`` or ``semantic_logits``)."""
    from ..data import pilarnet
    from ..io.memory import InferenceMemoryError, log

    n = pilarnet.num_events(data)
    n = n if max_events is None else min(n, int(max_events))
    outputs: dict[str, list] = {}
    skipped: list[int] = []
    chunk = 16
    for start in range(0, n, chunk):
        for k, ev in enumerate(pilarnet.read_events(data, start, min(n, start + chunk))):
            try:
                pred = model.predict(ev, logits=logits)
            except InferenceMemoryError as exc:
                if not skip_bad_events:
                    raise
                log.warning("skipping event: %s", exc)
                skipped.append(start + k)
                pred = model.empty_prediction(len(ev), logits)
            for name, v in pred.items():
                outputs.setdefault(name, []).append(np.asarray(v))
    return outputs, skipped, n


def run_predict(args) -> None:
    """``larpanda predict``: per-point predictions of semantic or panoptic weights, aligned with the input;
    ``--save-logits`` adds the per-point logits, ``--post KEY=VALUE`` overrides panoptic post-processing."""
    import json

    from .postprocess_settings import parse_overrides
    from .tta import set_tta
    from .weights import load_task_model

    post = parse_overrides(args.post)
    model = load_task_model(args.weights)
    task = model.config.get("task")
    if task not in ("semantic", "panoptic"):
        raise UserError(f"{args.weights}: predict needs semantic or panoptic weights (task {task!r})")
    set_tta(model, args.tta, args.weights)
    attrs = {"source_file": os.path.abspath(args.data), "task": task, "weights": str(args.weights)}
    if args.tta > 1:
        attrs["tta"] = int(args.tta)
    if task == "panoptic":
        attrs["postprocess"] = json.dumps(model.set_postprocess(**post))
    elif post:
        raise UserError(f"--post sets panoptic post-processing; {args.weights} are {task} weights")
    model = model.to(args.device)
    t0 = time.perf_counter()
    outputs, skipped, n = predict_file(model, args.data, args.max_events, args.skip_bad_events,
                                       logits=args.save_logits)
    elapsed = time.perf_counter() - t0
    write_event_arrays(args.out, outputs, attrs | {"skipped_events": len(skipped)},
                       {"event_index": np.arange(n, dtype=np.int64), "skipped_event_index": np.asarray(skipped, np.int64)})
    if not args.quiet:
        note = f" ({len(skipped)} skipped: above the inference limits)" if skipped else ""
        print(f"predicted {n} events{note} in {elapsed:.2f} s ({1000 * elapsed / max(1, n):.1f} ms/event) -> {args.out}",
              file=sys.stderr)
