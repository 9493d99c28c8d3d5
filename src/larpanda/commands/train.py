"""`larpanda train {semantic,panoptic}`: supervised fine-tuning / probing on (a fraction of) the labels.

``train semantic`` runs `larpanda.tasks.semantic.run_train`; ``train panoptic`` runs
`larpanda.tasks.panoptic.run_train`. Both share the arguments of `larpanda.tasks.common.add_common_train_args`.
"""

SEMANTIC_MODES = ("linear", "decoder", "full", "scratch", "uresnet")
PANOPTIC_MODES = ("decoder", "full", "scratch")


def add_parser(sub):
    from ..tasks.common import add_common_train_args
    from .weights import add_revision_arg

    p = sub.add_parser(
        "train",
        help="semantic or panoptic segmentation training with a label fraction",
        description="Train a downstream task. Example: larpanda train semantic --mode linear "
        "--label-fraction 0.01 --weights PRETRAINED --data train.h5 --val-data val.h5 --out runs/lin",
    )
    tsub = p.add_subparsers(dest="task", metavar="TASK")
    s = tsub.add_parser("semantic", help="5-class motif segmentation (shower, track, Michel, delta, LED)")
    add_common_train_args(s)
    add_revision_arg(s)
    s.add_argument("--model", choices=("ptv3", "uresnet"), default="ptv3",
                   help="ptv3 (Panda backbone) or uresnet (sparse-CNN baseline; implies --mode uresnet)")
    s.set_defaults(func=run, task="semantic")
    q = tsub.add_parser("panoptic", help="particle- or interaction-level panoptic segmentation")
    add_common_train_args(q)
    add_revision_arg(q)
    q.add_argument("--level", choices=("particle", "interaction"), required=True, help="instance level")
    q.add_argument("--head", choices=("mask", "graph"), default=None,
                   help="instance head: mask (the official mask-query decoder; default) or graph (staged graph "
                        "clustering: voxel edges -> fragments -> particles [-> interactions]); overrides the config's head")
    q.set_defaults(func=run, task="panoptic")
    p.set_defaults(func=_need_task, _parser=p)
    return p


def _need_task(args):
    from ..errors import UserError

    raise UserError("train: choose a task: 'larpanda train semantic ...' or 'larpanda train panoptic ...'")


def run(args):
    from ..errors import UserError
    from .weights import resolve_weights_arg

    resolve_weights_arg(args)
    if args.task == "semantic":
        if args.model == "uresnet":
            if args.mode not in ("uresnet", "scratch"):
                raise UserError(f"--model uresnet trains from scratch; --mode {args.mode} does not apply (use --mode uresnet)")
            args.mode = "uresnet"
        if args.mode not in SEMANTIC_MODES:
            raise UserError(f"--mode {args.mode}: choose from {', '.join(SEMANTIC_MODES)}")
        from ..tasks import semantic

        semantic.run_train(args)
        return 0
    if args.mode not in PANOPTIC_MODES:
        raise UserError(f"--mode {args.mode}: choose from {', '.join(PANOPTIC_MODES)}")
    try:
        from ..tasks import panoptic
    except ImportError as exc:
        raise UserError(f"panoptic training is not available: {exc}") from None
    panoptic.run_train(args)
    return 0
