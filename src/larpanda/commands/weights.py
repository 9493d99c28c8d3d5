"""``--weights`` / ``--revision`` shared by the commands that load weights.

``--weights`` takes a weights directory, a ``.safetensors`` file, an official Panda ``.pth``, a run
directory, or a Panda name ("base", "semantic", "particle", "interaction") that is taken from the Hugging
Face cache or downloaded (`larpanda.io.hub.resolve_weights`); ``--revision`` picks the Hub revision of a
name.
"""

NAMES_HELP = "or a Panda name: base, semantic, particle, interaction (from the Hugging Face Hub cache, downloaded once)"


def add_revision_arg(p) -> None:
    p.add_argument("--revision", default=None,
                   help="Hub revision (branch, tag or commit) of a Panda name given to --weights (default: main)")


def resolve_weights_arg(args, attr: str = "weights") -> None:
    """With ``--revision``, replace ``args.<attr>`` by its local path now (`larpanda.tasks.common.find_weights`),
    so that the later loading code gets that revision's file; without it, names resolve where the weights
    are loaded (revision main)."""
    value, revision = getattr(args, attr), args.revision
    if value is not None and revision is not None:
        from ..tasks.common import find_weights

        setattr(args, attr, str(find_weights(value, revision)))


def add_tta_arg(p) -> None:
    p.add_argument("--tta", type=int, default=1, metavar="N",
                   help="semantic weights: average the logits over the first N of the 48 symmetries of the voxel "
                   "cube (test-time augmentation, N times the inference time; larpanda.tasks.tta). Default 1: off, "
                   "as in the official evaluation")
