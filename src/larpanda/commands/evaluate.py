"""`larpanda evaluate`: metrics of trained weights on labelled data, as JSON (docs/design.md §7)."""

from ..constants import LED_CLASS, MIN_RAW_POINTS
from ..tasks.postprocess_settings import cli_help as post_help
from .limits import add_limit_args, limits_from_args
from .weights import NAMES_HELP, add_revision_arg, add_tta_arg, resolve_weights_arg


def add_parser(sub):
    p = sub.add_parser(
        "evaluate",
        help="metrics of trained weights on labelled events (JSON)",
        description="Evaluate semantic (mIoU, macro-F1, ... docs/design.md §7.1) or panoptic weights on labelled HDF5 data.",
    )
    p.add_argument("--weights", required=True, help=f"trained task weights (dir with model.safetensors + config.json, or a run dir), {NAMES_HELP}")
    add_revision_arg(p)
    p.add_argument("--data", nargs="+", required=True, help="HDF5 files or directories with labels")
    p.add_argument("--task", choices=("semantic", "panoptic"), default=None, help="task (default: read from the weights' config)")
    p.add_argument("--out", default=None, help="write the metrics JSON here (also printed)")
    p.add_argument("--report", default=None, help="also write an HTML report into this directory")
    p.add_argument("--max-events", type=int, default=None, help="evaluate at most this many events")
    p.add_argument("--min-points", type=int, default=MIN_RAW_POINTS,
                   help=f"raw points an event needs to be evaluated (reference: {MIN_RAW_POINTS})")
    p.add_argument("--exclude-led", action="store_true", help=f"semantic: drop LED (class {LED_CLASS}) from the class means")
    p.add_argument("--post", action="append", default=[], metavar="KEY=VALUE", help=post_help())
    add_tta_arg(p)
    p.add_argument("--batch-size", type=int, default=4, help="events per forward pass")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_limit_args(p)  # with --skip-bad-events malformed events are skipped too (counted: skipped_events)
    p.set_defaults(func=run)
    return p


def run(args):
    resolve_weights_arg(args)
    with limits_from_args(args):
        return _run(args)


def _run(args):
    from ..errors import UserError
    from ..tasks.tta import set_tta
    from ..tasks.weights import load_task_model

    model = load_task_model(args.weights, args.task)  # read once; its config names the task
    task = model.config.get("task")
    set_tta(model, args.tta, args.weights)
    if args.post and task != "panoptic":
        raise UserError(f"--post sets panoptic post-processing; {args.weights} are {task} weights")
    if task == "semantic":
        from ..tasks import semantic

        semantic.run_evaluate(args, model)
        return 0
    if task == "panoptic":
        from ..tasks import panoptic

        panoptic.run_evaluate(args, model)
        return 0
    raise UserError(f"{args.weights}: task {task!r} cannot be evaluated (expected semantic or panoptic weights)")
