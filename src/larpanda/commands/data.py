"""`larpanda data download --split train|val|test|all [--out DIR] [--revision R]`: PILArNet-M from the
Hugging Face Hub (dataset repo ``deeplearnphysics/pilarnet-m``)."""

from __future__ import annotations

SPLIT_CHOICES = ("train", "val", "test", "all")


def add_parser(sub):
    p = sub.add_parser("data", help="PILArNet-M data from the Hugging Face Hub (download)",
                       description="larpanda data download --split test [--out DIR] [--revision R]")
    dsub = p.add_subparsers(dest="action", metavar="ACTION")
    d = dsub.add_parser(
        "download",
        help="download a split of PILArNet-M (resumable; files already there are kept)",
        description="Fetch SPLIT/* (the .h5 files and their _points.npy) of the Hub dataset repo "
        "deeplearnphysics/pilarnet-m into --out, or into the Hugging Face cache (HF_HOME / HF_HUB_CACHE). "
        "Interrupted downloads resume; each file's size is checked against the Hub's listing and each .h5 "
        "must open as PILArNet-M HDF5. Sizes: train 151 GB, val 9.3 GB, test 7.0 GB. With HF_HUB_OFFLINE=1 "
        "only checks what is already there.",
    )
    d.add_argument("--split", required=True, choices=SPLIT_CHOICES, help="which split (all = train, val, test)")
    d.add_argument("--out", default=None, help="directory to write SPLIT/ into (default: the Hugging Face cache)")
    d.add_argument("--revision", default=None,
                   help="Hub revision: branch, tag or commit (default main, as Panda; pimm's v2 is the tag v2)")
    d.set_defaults(func=run_download)
    p.set_defaults(func=_need_action)
    return p


def _need_action(args):
    from ..errors import UserError

    raise UserError("data: choose an action: 'larpanda data download --split test'")


def run_download(args):
    from ..io.hub import SPLITS, download_split

    splits = SPLITS if args.split == "all" else (args.split,)
    for split in splits:
        files = download_split(split, args.out, args.revision)
        size = sum(f.stat().st_size for f in files)
        print(f"{split}: {len(files)} file(s), {size / 1e9:.2f} GB in {files[0].parent}")
        for f in files:
            print(f"  {f}")
    return 0
