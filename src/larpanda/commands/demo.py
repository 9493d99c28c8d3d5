"""`larpanda demo [--quick] --out DIR`: simulate, pretrain, adapt with few labels, find particles, report."""


def add_parser(sub):
    p = sub.add_parser(
        "demo",
        help="the whole story on simulated events: results.json + offline report.html",
        description="Simulate train/val/test events, pretrain the tiny backbone without labels, train semantic "
        "segmentation at label fractions 1/10/100 % (linear, decoder, scratch; full at 1 %; UResNet), a particle "
        "detector, evaluate everything on the test set and write DIR/results.json and DIR/report.html. "
        "Resumable: re-running skips finished steps. About 15 min on 2 CPU cores (--quick: about 3 min).",
    )
    p.add_argument("--out", required=True, help="output directory (created; finished steps are kept)")
    p.add_argument("--quick", action="store_true", help="small sizes (configs/demo/quick.yaml)")
    p.add_argument("--workers", type=int, default=1, help="processes for the simulator (default 1)")
    p.add_argument("--jobs", type=int, default=None, metavar="N",
                   help="training steps run side by side in N processes sharing the cores (default: 2 when 2 or "
                   "more cores are usable, else 1)")
    p.add_argument("--config", default=None, help="demo config preset or YAML (default: default or quick)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="K=V",
                   help="override a demo config key, e.g. --set simulate.train=100 (repeatable)")
    p.add_argument("--verbose", action="store_true", help="show the training progress bars")
    p.set_defaults(func=run)
    return p


def run(args):
    from ..demo import run_demo

    res = run_demo(args.out, quick=args.quick, config=args.config, overrides=args.overrides, workers=args.workers,
                   quiet=not args.verbose, jobs=args.jobs)
    print(f"results: {args.out}/results.json  report: {args.out}/report.html  ({res['wall_s']:.0f} s)")
    return 0
