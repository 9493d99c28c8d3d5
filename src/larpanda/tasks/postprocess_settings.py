"""The panoptic post-processing settings (docs/model.md §4.6): names, official defaults, help and checks.
Light module (no torch import): the ``--post`` option of ``predict``/``evaluate`` reads it for ``--help``.

The defaults are the official ``Detector``'s (Panda ``panda/model_panoptic.py``); an official checkpoint's
config, a larpanda weights config (``postprocess``) and ``--post KEY=VALUE`` override them in that order.
"""

from __future__ import annotations

from ..errors import UserError

DEFAULTS = dict(stuff_threshold=0.5, mask_threshold=0.5, conf_threshold=0.5, nms_kernel="gaussian", nms_sigma=2.0,
                nms_pre=-1, nms_max=-1, min_points=2, fill_uncovered=False)
NMS_KERNELS = ("gaussian", "linear")
HELP = {
    "stuff_threshold": "a point is stuff (LED) when its stuff probability is at least this",
    "mask_threshold": "a query's mask holds the points whose mask probability is above this",
    "conf_threshold": "minimum class score of a candidate, and of its score after the NMS",
    "nms_kernel": "matrix-NMS decay: gaussian or linear",
    "nms_sigma": "width of the gaussian decay",
    "nms_pre": "at most this many candidates (by score) enter the NMS; -1 = all",
    "nms_max": "at most this many masks are kept after the NMS; -1 = all",
    "min_points": "minimum points of a candidate mask and of a painted instance",
    "fill_uncovered": "after painting, give uncovered points to the remaining candidates in score order",
}


def settings(values: dict | None = None, base: dict | None = None, where: str = "postprocess") -> dict:
    """`DEFAULTS` updated with ``base`` then ``values``, checked and typed: unknown keys and bad values are a
    `UserError` naming ``where``. ``values`` may hold strings (command-line ``KEY=VALUE``)."""
    out = dict(DEFAULTS)
    for key, raw in list((base or {}).items()) + list((values or {}).items()):
        if key not in DEFAULTS:
            raise UserError(f"{where}: unknown post-processing setting {key!r} (known: {', '.join(DEFAULTS)})")
        try:
            out[key] = _typed(key, raw)
        except (TypeError, ValueError):
            raise UserError(f"{where}: bad value {raw!r} for post-processing setting {key}") from None
    return out


def _typed(key: str, raw):
    if key == "fill_uncovered":
        if isinstance(raw, str):
            low = raw.strip().lower()
            if low not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError(raw)
            return low in ("true", "1", "yes")
        if not isinstance(raw, (bool, int)) or raw not in (0, 1):
            raise ValueError(raw)
        return bool(raw)
    if key == "nms_kernel":
        if raw not in NMS_KERNELS:
            raise ValueError(raw)
        return str(raw)
    if key in ("nms_pre", "nms_max", "min_points"):
        if isinstance(raw, bool) or (isinstance(raw, float) and not raw.is_integer()):
            raise ValueError(raw)
        return int(raw)
    if isinstance(raw, bool):
        raise ValueError(raw)
    return float(raw)


# The graph head's settings (docs/model.md §4.8): the score thresholds of its three stages, in stage order,
# the smallest instance it keeps, how scored cluster edges are grouped (single or average linkage), the
# neighbours per fragment of the fragment graph at inference, the LED probability from which a point is stuff and
# the LED-fragment probability from which a fragment is (heads trained with ``led_fragments``).
GRAPH_KEYS = ("edge_threshold", "fragment_threshold", "interaction_threshold", "min_points", "linkage", "inference_knn",
              "stuff_threshold", "led_fragment_threshold")
GRAPH_THRESHOLDS = GRAPH_KEYS[:3]


def parse_overrides(items, where: str = "--post") -> dict:
    """``["KEY=VALUE", ...]`` → typed settings overrides (not merged with the defaults)."""
    values = {}
    for item in items or []:
        if "=" not in item:
            raise UserError(f"{where} expects KEY=VALUE, got {item!r}")
        key, raw = item.split("=", 1)
        values[key.strip()] = raw.strip()
    graph = {k: values.pop(k) for k in list(values) if k in GRAPH_KEYS and k not in DEFAULTS}  # checked by the graph head
    checked = settings(values, where=where)
    return {k: checked[k] for k in values} | graph


def cli_help() -> str:
    """Help of the ``--post KEY=VALUE`` option of ``predict`` and ``evaluate``."""
    keys = "; ".join(f"{k} ({_show(v)}): {HELP[k]}" for k, v in DEFAULTS.items())
    return ("panoptic weights: override one post-processing setting (repeatable). The weights' config (an official "
            "checkpoint's Detector settings, or the postprocess section of larpanda weights) sets them, else the "
            f"official Detector defaults apply (docs/model.md §4.6). Keys (default): {keys}. Graph-head weights "
            f"(docs/model.md §4.8) take {', '.join(GRAPH_KEYS)} instead (thresholds in (0, 1); linkage single or average; inference_knn ≥ 1).")


def _show(v) -> str:
    return str(v).lower() if isinstance(v, bool) else str(v)
