"""`PILArNet`: a PILArNet-M split by name, from a local root or the Hugging Face Hub, as a
`PILArNetDataset` (the dataset class the rest of larpanda reads)."""

from __future__ import annotations

from .dataset import PILArNetDataset


def PILArNet(split="test", root=None, revision: str | None = None, **kwargs) -> PILArNetDataset:
    """The events of one split ("train", "val", "test") or a list of splits of PILArNet-M.

    Files are found under ``root`` by the reference glob ``<root>/*<split>/*.h5``; without ``root``, or when
    ``root`` has none, they come from the Hub dataset repo ``deeplearnphysics/pilarnet-m`` at ``revision``
    (default "main", as Panda; pimm's v2 is the tag "v2"): taken from the Hugging Face cache or downloaded
    into ``root`` / the cache (`larpanda.io.hub.split_files`; ``HF_HUB_OFFLINE=1`` uses the cache only).
    ``kwargs`` go to `PILArNetDataset` (``energy_threshold``, ``min_points``, ``max_events``, ...).

    Unlike Panda's ``PILArNetH5Dataset`` the items are larpanda's prepared dicts (`transforms.prepare`)."""
    from ..io.hub import split_files

    splits = [split] if isinstance(split, str) else list(split)
    files = [f for s in splits for f in split_files(s, root, revision)]
    return PILArNetDataset(files, **kwargs)
