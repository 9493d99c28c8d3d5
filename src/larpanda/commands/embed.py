"""`larpanda embed --weights W --data IN.h5 --out OUT.h5`: per-point backbone features.

Layout of OUT.h5 (written atomically): for event i of IN.h5,
``feat`` vlen float32, event i's features flattened row-major, shape (n_i, C) with C = attrs["channels"];
``index`` vlen int64, the row of each feature in the event's ``point`` array (rows removed by the energy
cut are absent); ``num_points`` (E,) int64 = n_i; attrs ``source`` (input file), ``weights``,
``channels``, ``energy_threshold``. Row j of event i: ``feat[i].reshape(-1, C)[j]`` belongs to voxel
``point[i].reshape(-1, 8)[index[i][j]]``.
"""

from __future__ import annotations

from ..constants import ENERGY_THRESHOLD_MEV
from .limits import add_limit_args, limits_from_args
from .weights import NAMES_HELP, add_revision_arg


def add_parser(sub):
    p = sub.add_parser("embed", help="per-point backbone features to HDF5",
                       description=__doc__.split("\n\n", 1)[1] if __doc__ else None)
    p.add_argument("--weights", required=True, help=f"weights dir, .safetensors or official Panda .pth, {NAMES_HELP}")
    add_revision_arg(p)
    p.add_argument("--data", required=True, help="PILArNet-M HDF5 file")
    p.add_argument("--out", required=True, help="output HDF5 file")
    p.add_argument("--start", type=int, default=0)
    p.add_argument("--stop", type=int, default=None)
    p.add_argument("--energy-threshold", type=float, default=ENERGY_THRESHOLD_MEV, help="MeV; voxels at or below are dropped")
    p.add_argument("--device", default="cpu")
    p.add_argument("--quiet", action="store_true")
    add_limit_args(p)  # a skipped event gets 0 feature rows; attrs["skipped_events"] counts them
    p.set_defaults(func=run)
    return p


def run(args):
    with limits_from_args(args):
        return _run(args)


def _run(args):
    import inspect

    import numpy as np
    import torch
    from tqdm import tqdm

    from ..data import pilarnet
    from ..errors import UserError
    from ..io import load_model
    from ..io.memory import InferenceMemoryError, log
    from ..tasks.predict import write_event_arrays

    model = load_model(args.weights, revision=args.revision)
    if not hasattr(model, "embed"):
        raise UserError(f"{args.weights}: this model has no embed()")
    try:
        model.to(torch.device(args.device))
    except (RuntimeError, AssertionError) as exc:
        raise UserError(f"--device {args.device}: {exc}") from None
    events = pilarnet.read_events(args.data, args.start, args.stop)
    feats, idxs = [], []
    takes_thr = "energy_threshold" in inspect.signature(model.embed).parameters
    if not takes_thr and args.energy_threshold != ENERGY_THRESHOLD_MEV:
        raise UserError("--energy-threshold: this model's embed() uses its own configured threshold")
    skipped = []
    for k, ev in enumerate(tqdm(events, disable=args.quiet or None, desc="embed")):
        keep = np.flatnonzero(ev.energy > np.float32(args.energy_threshold))
        try:
            f = model.embed(ev, energy_threshold=args.energy_threshold) if takes_thr else model.embed(ev)
        except InferenceMemoryError as exc:
            if not args.skip_bad_events:
                raise
            log.warning("skipping event: %s", exc)
            skipped.append(args.start + k)
            f, keep = np.zeros((0, 0), np.float32), keep[:0]
        feats.append(np.asarray(f, np.float32))
        idxs.append(keep.astype(np.int64))
    channels = max((int(a.shape[1]) for a in feats), default=0)
    write_event_arrays(args.out, {"feat": feats, "index": idxs},
                       dict(source=str(args.data), weights=str(args.weights), channels=channels,
                            energy_threshold=args.energy_threshold, first_event=args.start, skipped_events=len(skipped)),
                       {"num_points": np.array([len(b) for b in idxs], np.int64),
                        "skipped_event_index": np.asarray(skipped, np.int64)})
    note = f" ({len(skipped)} skipped: above the inference limits)" if skipped else ""
    print(f"wrote {args.out}: {len(feats)} events{note}, {channels} channels")
    return 0
