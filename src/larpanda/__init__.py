"""larpanda: Panda (PTv3 + Sonata self-distillation) for LArTPC data, in pure PyTorch.

    import larpanda as lp
    events = lp.data.read_events("file.h5", start=0, stop=10)
    model = lp.load_model("path/to/weights")      # safetensors dir, official Panda .pth, or "base" (Hub)
    feats = model.embed(events[0])                # (N, C), event order
"""

from __future__ import annotations

__version__ = "0.1.0"

from .errors import DataError, NumericalError, UserError  # noqa: E402

__all__ = ["DataError", "UserError", "NumericalError", "data", "build_model", "load_model", "__version__"]


def __getattr__(name):
    # Lazy: importing larpanda must stay cheap (the CLI's --help imports it).
    import importlib

    if name in ("data", "sim", "nn", "ssl", "tasks", "metrics", "train", "io", "viz"):
        return importlib.import_module(f".{name}", __name__)
    if name in ("build_model", "load_model"):
        return getattr(importlib.import_module(".io", __name__), name)
    raise AttributeError(f"module 'larpanda' has no attribute {name!r}")
