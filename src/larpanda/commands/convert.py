"""`larpanda convert PANDA.pth --out DIR`: official Panda checkpoint -> safetensors + config.json."""

from __future__ import annotations


def add_parser(sub):
    p = sub.add_parser(
        "convert",
        help="official Panda .pth -> safetensors weights directory",
        description="Read an official Panda checkpoint ({'config', 'state_dict'}) without unpickling code "
        "(torch.load weights_only=True), check its keys strictly, and write DIR/model.safetensors + "
        "DIR/config.json.",
    )
    p.add_argument("checkpoint", help="official Panda .pth file, or a Panda name: base, semantic, particle, "
                   "interaction (from the Hugging Face Hub cache, downloaded once)")
    p.add_argument("--revision", default=None, help="Hub revision (branch, tag or commit) of a Panda name (default: main)")
    p.add_argument("--out", required=True, help="output weights directory")
    p.set_defaults(func=run)
    return p


def run(args):
    from ..io import load_model, save_model

    model = load_model(args.checkpoint, revision=args.revision)
    out = save_model(model, args.out)
    n = sum(p.numel() for p in model.parameters())
    print(f"wrote {out}/model.safetensors and config.json (task {model.config.get('task')}, {n:,} parameters)")
    return 0
