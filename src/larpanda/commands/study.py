"""`larpanda study semantic`: the label-efficiency grid (label fractions × training modes)."""

from .weights import add_revision_arg, resolve_weights_arg


def add_parser(sub):
    p = sub.add_parser(
        "study",
        help="label-efficiency study: train every (mode, label fraction) and tabulate test metrics",
        description="larpanda study semantic --data DIR --fractions 0.001,0.01,0.1,1 "
        "--modes linear,decoder,full,scratch,uresnet --weights PRETRAINED --out DIR. Writes study.csv, "
        "study.md, study.html and report.html.",
    )
    p.add_argument("task", choices=("semantic",), help="the task to study")
    p.add_argument("--data", nargs="+", required=True, help="simulate-style directory with train/val/test files, or files")
    p.add_argument("--train-data", nargs="+", default=None, help="training files (default: *train* files under --data)")
    p.add_argument("--val-data", nargs="+", default=None, help="validation files (default: *val* files under --data)")
    p.add_argument("--test-data", nargs="+", default=None, help="test files (default: *test* files under --data)")
    p.add_argument("--fractions", default="0.001,0.01,0.1,1", help="comma list of label fractions in (0,1]")
    p.add_argument("--modes", default="linear,decoder,full,scratch,uresnet", help="comma list of linear,decoder,full,scratch,uresnet")
    p.add_argument("--weights", default=None, help="pretrained backbone (needed by linear/decoder/full): a weights "
                   "dir, .safetensors, Panda .pth or run dir, or the Panda name base (from the Hugging Face Hub cache)")
    add_revision_arg(p)
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--config", default=None, help="semantic config preset or YAML applied to every run")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="K=V", help="config override for every run")
    p.add_argument("--seed", type=int, default=0, help="seed of the label subsets and of training")
    p.add_argument("--max-test-events", type=int, default=None, help="evaluate on at most this many test events")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run)
    return p


def run(args):
    from ..tasks.study import run_study

    resolve_weights_arg(args)
    run_study(args)
    return 0
