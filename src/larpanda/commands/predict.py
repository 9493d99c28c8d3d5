"""`larpanda predict`: per-point predictions aligned with the input events (HDF5, docs/design.md §4.7)."""

from ..tasks.postprocess_settings import cli_help as post_help
from .limits import add_limit_args, limits_from_args
from .weights import NAMES_HELP, add_revision_arg, add_tta_arg, resolve_weights_arg


def add_parser(sub):
    p = sub.add_parser(
        "predict",
        help="per-point predictions of trained weights, written as HDF5 aligned with the input events",
        description="Run trained semantic or panoptic weights on IN.h5 and write OUT.h5: one vlen dataset per "
        "output, row i = input event i, raw point order (rows removed by the energy cut get -1), plus "
        "event_index and the source_file attribute. An event whose estimated inference memory is above "
        "--max-memory-gb stops the run (exit 2) before its forward pass, or with --skip-bad-events is "
        "skipped (rows -1, listed in skipped_event_index).",
    )
    p.add_argument("--weights", required=True, help=f"trained task weights (dir, .safetensors or Panda .pth), {NAMES_HELP}")
    add_revision_arg(p)
    p.add_argument("--data", required=True, help="input PILArNet-M HDF5 file")
    p.add_argument("--out", required=True, help="output HDF5 file")
    p.add_argument("--max-events", type=int, default=None, help="predict at most this many events")
    p.add_argument("--save-logits", action="store_true",
                   help="also write per-point logits: seg_logits (panoptic: K columns, the official Detector's "
                   "per-point class logits, about -1e4 + c at LED points) or semantic_logits (semantic: 5 columns); "
                   "0 for rows removed by the energy cut")
    p.add_argument("--post", action="append", default=[], metavar="KEY=VALUE", help=post_help())
    add_tta_arg(p)
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_limit_args(p)
    p.set_defaults(func=run)
    return p


def run(args):
    from ..tasks.predict import run_predict

    resolve_weights_arg(args)
    with limits_from_args(args):
        run_predict(args)
    return 0
