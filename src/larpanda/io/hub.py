"""Panda weights and PILArNet-M files from the Hugging Face Hub, fetched the way the official ``panda``
package fetches them.

* Weights: `resolve_weights` turns a local path or a Panda name ("base", "semantic", "particle",
  "interaction") into a local file; a name is ``huggingface_hub.hf_hub_download(repo_id=
  "deeplearnphysics/panda", filename="panda_<name>.pth")`` into the standard Hub cache.
* Data: `split_files` finds one split of the dataset repo ``deeplearnphysics/pilarnet-m`` under a root
  directory, or fetches it with `download_split` (``snapshot_download`` of ``<split>/*``) into that root or
  the Hub cache.

huggingface_hub itself honours ``HF_HOME`` / ``HF_HUB_CACHE`` (where the cache is) and ``HF_HUB_OFFLINE=1``
(cache only, no network). Every failure is a one-line `larpanda.errors.UserError` that says what was looked
for, where, and how to get it.
"""

from __future__ import annotations

import logging
import shutil
from contextlib import contextmanager
from pathlib import Path

from ..errors import DataError, UserError

PANDA_REPO = "deeplearnphysics/panda"
PANDA_NAMES = ("base", "semantic", "particle", "interaction")
DATASET_REPO = "deeplearnphysics/pilarnet-m"
SPLITS = ("train", "val", "test")

log = logging.getLogger("larpanda.io")


# --------------------------------------------------------------------------------------------- weights


def panda_name(arg) -> str | None:
    """The Panda checkpoint name of ``arg`` ("particle" for "particle" or "panda_particle"), else None."""
    s = str(arg)
    if s.startswith("panda_"):
        s = s[len("panda_"):]
    return s if s in PANDA_NAMES else None


def resolve_weights(name_or_path, revision: str | None = None) -> Path:
    """A local weights path for ``name_or_path``.

    A path that exists is returned as is (``revision`` is then ignored). A Panda name ("base", "semantic",
    "particle", "interaction", or with the ``panda_`` prefix) is ``panda_<name>.pth`` of the Hub repo
    ``deeplearnphysics/panda`` at ``revision`` (default "main"), downloaded into the Hub cache or taken from
    it; the returned path is the file in the cache's ``snapshots/<commit>/`` folder. Anything else, or a
    name that neither the cache nor the network can provide, raises `UserError`."""
    p = Path(name_or_path)
    if p.exists():
        return p
    name = panda_name(name_or_path)
    if name is None:
        raise UserError(f"weights not found: {name_or_path} (no such file or directory, and not a Panda name: "
                        f"{', '.join(PANDA_NAMES)})")
    from huggingface_hub import hf_hub_download

    filename = f"panda_{name}.pth"
    hint = f"{_hf_cli()} download {PANDA_REPO} {filename}" + (f" --revision {revision}" if revision else "")
    with hub_errors(filename, PANDA_REPO, revision, hint):
        return Path(hf_hub_download(repo_id=PANDA_REPO, filename=filename, revision=revision))


# ------------------------------------------------------------------------------------------------ data


def split_files(split: str, root=None, revision: str | None = None) -> list[Path]:
    """The ``.h5`` files of one PILArNet-M split ("train", "val" or "test"), sorted.

    With ``root``: the files under it by the reference glob ``<root>/*<split>/*.h5`` (no network); when
    there are none the split is downloaded into ``root``. Without ``root``: the split in the Hub cache,
    downloaded there when missing (`download_split`). A split is the files of the repo folder named after
    it (``test/generic_v2_50000_v2.h5`` with its ``_points.npy``, docs/design.md §4.1). Every ``.h5`` must open
    as PILArNet-M HDF5."""
    check_split(split)
    if root is not None:
        from ..data.dataset import find_files

        try:
            local = find_files(root, split)
        except DataError:  # no such directory or no file of this split yet: download it there
            local = []
        if local:
            check_h5(local)
            return local
    return download_split(split, root, revision)


def download_split(split: str, out=None, revision: str | None = None) -> list[Path]:
    """Fetch ``<split>/*`` (the ``.h5`` files and their ``_points.npy``) of the Hub dataset repo
    ``deeplearnphysics/pilarnet-m`` into ``out``, or into the Hub cache when ``out`` is None, and return the
    split's ``.h5`` files.

    ``huggingface_hub.snapshot_download`` does the transfer: files already complete are not fetched again
    and interrupted downloads resume. Online, each file's size is compared with the Hub's listing;
    offline (``HF_HUB_OFFLINE=1`` or no network) the files already there are used. Each ``.h5`` must open
    as HDF5 with the ``point`` and ``cluster`` datasets."""
    from huggingface_hub import constants, snapshot_download

    check_split(split)
    sizes = _hub_sizes(split, revision)
    where = str(out) if out is not None else constants.HF_HUB_CACHE
    hint = f"larpanda data download --split {split}" + (f" --out {out}" if out is not None else "") + (
        f" --revision {revision}" if revision else "")
    with hub_errors(f"split {split!r}", DATASET_REPO, revision, hint, where=where, repo_type="dataset"):
        folder = Path(snapshot_download(repo_id=DATASET_REPO, repo_type="dataset", revision=revision,
                                        allow_patterns=[f"{split}/*"], local_dir=out))
    files = sorted((folder / split).glob("*.h5"))
    if not files:  # offline, the snapshot folder of another split may exist without this one
        what, at = f"split {split!r}", _at(DATASET_REPO, revision, "dataset")
        if constants.HF_HUB_OFFLINE:
            raise UserError(_not_there(what, at, folder, "HF_HUB_OFFLINE is set", hint))
        raise UserError(f"{what} of {at}: no .h5 file in {folder / split}")
    if sizes is not None:
        check_sizes(folder, sizes, split)
    check_h5(files)
    return files


def check_split(split: str) -> None:
    if split not in SPLITS:
        raise UserError(f"split {split!r}: choose from {', '.join(SPLITS)}")


def check_sizes(folder: Path, sizes: dict, split: str) -> None:
    """Each file the Hub lists (``{repo path: bytes}``) exists under ``folder`` with that size."""
    for rel, size in sorted(sizes.items()):
        p = folder / rel
        if not p.is_file():
            raise UserError(f"{p}: missing, the Hub lists {rel} ({size} bytes); run `larpanda data download "
                            f"--split {split}` again")
        have = p.stat().st_size
        if have != size:
            raise UserError(f"{p}: {have} bytes but the Hub lists {size} for {rel}; delete it and run "
                            f"`larpanda data download --split {split}` again")


def check_h5(files) -> None:
    """Each file opens as PILArNet-M HDF5 (``point``, ``cluster`` and, in v2, ``cluster_extra``), else a
    `DataError` naming it."""
    from ..data.pilarnet import num_events

    for f in files:
        num_events(f)


def _hub_sizes(split: str, revision: str | None) -> dict | None:
    """``{repo path: bytes}`` of the files under ``<split>/`` on the Hub, or None offline or when the Hub
    cannot be asked (then `snapshot_download` uses what is already there or says what is missing)."""
    from huggingface_hub import HfApi, constants

    if constants.HF_HUB_OFFLINE:
        return None
    try:
        entries = list(HfApi().list_repo_tree(DATASET_REPO, path_in_repo=split, recursive=True,
                                              repo_type="dataset", revision=revision))
    except Exception as exc:  # noqa: BLE001  no network, Hub down, unknown revision: snapshot_download reports it
        log.warning("cannot list %s/%s on the Hub (%s): file sizes not checked", DATASET_REPO, split,
                    " ".join(str(exc).split())[:200])
        return None
    sizes = {}
    for e in entries:
        size = getattr(getattr(e, "lfs", None), "size", None) or getattr(e, "size", None)
        if size is not None:  # folders have no size
            sizes[e.path] = int(size)
    return sizes


# ---------------------------------------------------------------------------------------------- errors


def _hf_cli() -> str:
    """The Hub command line installed here: ``hf`` (huggingface_hub >= 0.34) or ``huggingface-cli``."""
    return "hf" if shutil.which("hf") else "huggingface-cli"


@contextmanager
def hub_errors(what: str, repo_id: str, revision: str | None, hint: str, where: str | None = None,
               repo_type: str = "model"):
    """Turn huggingface_hub's errors inside the block into one-line `UserError` s naming ``what`` (a file
    or a split), the repo and revision, ``where`` it was looked for (default: the Hub cache) and ``hint``
    (a command that fetches it)."""
    from huggingface_hub import constants
    from huggingface_hub.utils import (EntryNotFoundError, HfHubHTTPError, LocalEntryNotFoundError,
                                       RepositoryNotFoundError, RevisionNotFoundError)

    at = _at(repo_id, revision, repo_type)
    try:
        yield
    except LocalEntryNotFoundError:
        why = "HF_HUB_OFFLINE is set" if constants.HF_HUB_OFFLINE else "the Hub cannot be reached"
        raise UserError(_not_there(what, at, where or constants.HF_HUB_CACHE, why, hint)) from None
    except RevisionNotFoundError:
        raise UserError(f"{what}: the Hub repo {repo_id} has no revision {revision!r}") from None
    except RepositoryNotFoundError as exc:
        raise UserError(f"{what}: the Hub repo {repo_id} was not found or needs a login "
                        f"({_first_line(exc)})") from None
    except EntryNotFoundError:
        raise UserError(f"{what} is not in {at} on the Hub") from None
    except HfHubHTTPError as exc:
        raise UserError(f"{what} of {at}: Hub error: {_first_line(exc)}") from None


def _at(repo_id: str, revision: str | None, repo_type: str = "model") -> str:
    return f"{repo_id}@{revision or 'main'}" + (" (dataset)" if repo_type == "dataset" else "")


def _not_there(what: str, at: str, where, why: str, hint: str) -> str:
    return f"{what} of {at} is not in {where} and {why}; fetch it with `{hint}` on a machine online (or run once online)"


def _first_line(exc) -> str:
    lines = [s for s in str(exc).splitlines() if s.strip()]
    return lines[0].strip()[:200] if lines else type(exc).__name__
