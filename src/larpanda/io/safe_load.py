"""Reading official Panda ``.pth`` checkpoints (pickles) without ever running code from them.

The official loader uses ``torch.load(weights_only=False)``, which executes whatever the pickle names.
larpanda uses ``torch.load(weights_only=True)`` (torch's restricted unpickler) and widens its allow-list,
only for the duration of the load, with plain data types a checkpoint may hold besides tensors:

* numpy scalars, arrays and dtypes: ``numpy.core.multiarray.scalar`` / ``_reconstruct`` (and the numpy 2
  names ``numpy._core.multiarray.*``), ``numpy.ndarray``, ``numpy.dtype`` and the dtype classes such as
  ``numpy.dtypes.Float64DType`` (object arrays excluded);
* ``addict.Dict`` (configs; addict need not be installed): read as a ``collections.OrderedDict``
  (``collections.OrderedDict`` itself is allowed by torch already).

Any other global (``os.system``, ``builtins.eval``, a class of some training framework, ...) is refused
with a `UserError` naming it, before anything is called.
"""

from __future__ import annotations

import pickle
import re
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch

from ..errors import UserError


class AddictDict:
    """Stand-in for ``addict.addict.Dict``: unpickling one creates a ``collections.OrderedDict``.

    torch's restricted unpickler fills only exact ``dict`` / ``OrderedDict`` instances with items, so the
    stand-in hands it an ``OrderedDict``. (An addict pickle also sets the same items as the state, which
    the unpickler stores in the OrderedDict's ``__dict__``: attribute access to the keys, as in addict.)"""

    def __new__(cls, *args):
        return OrderedDict()


def _numpy_globals() -> list:
    scalar = np.float64(0).__reduce__()[0]  # numpy's scalar rebuild function, whatever module holds it
    reconstruct = np.zeros(0).__reduce__()[0]
    out: list = [np.ndarray, np.dtype]
    for mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
        out += [(scalar, f"{mod}.scalar"), (reconstruct, f"{mod}._reconstruct")]
    out += sorted({type(np.dtype(c)) for c in np.typecodes["All"] if c != "O"}, key=str)  # dtype classes
    return out


def safe_globals() -> list:
    """The extra globals allowed on top of torch's ``weights_only`` defaults (for
    ``torch.serialization.safe_globals``)."""
    return [*_numpy_globals(), (AddictDict, "addict.addict.Dict"), (AddictDict, "addict.Dict")]


def allowed_names() -> set:
    """Full names of the globals in `safe_globals`."""
    return {g[1] if isinstance(g, tuple) else f"{g.__module__}.{g.__qualname__}" for g in safe_globals()}


def safe_torch_load(path):
    """``torch.load(path, map_location="cpu", weights_only=True)`` with the `safe_globals` allowed.

    Raises `UserError` for a file that is not a torch checkpoint, and, naming the global, for a pickle that
    needs anything outside the allow-list (it is refused, never called)."""
    path = Path(path)
    try:
        with torch.serialization.safe_globals(safe_globals()):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        refused, reason = _refused(path, exc)
        if refused:
            raise UserError(f"{path}: refusing to load: it contains {refused}; only tensors, numpy "
                            f"scalars/arrays, dicts, OrderedDict and addict.Dict are loaded (anything else could "
                            f"run code), nothing from the file was executed") from None
        raise UserError(f"{path}: cannot read as a torch checkpoint: {reason}") from None
    except Exception as exc:  # noqa: BLE001  corrupt or not a torch file
        raise UserError(f"{path}: cannot read as a torch checkpoint: {' '.join(str(exc).split())}") from None


def _refused(path: Path, exc: Exception) -> tuple[str, str]:
    """(what the unpickler refused, or "" when the file is just unreadable; torch's reason in one line).

    The refused globals are read from the pickle's opcodes (nothing is run); for a legacy (non-zip) file
    they are taken from torch's message."""
    paras = [" ".join(p.split()) for p in re.split(r"\n\s*\n", str(exc)) if p.strip()]
    advice = ("Weights only load failed", "Check the documentation of torch.load", "Please file an issue")
    reason = " ".join(p for p in paras if not p.startswith(advice))[:300] or " ".join(paras)[:300]
    try:
        names = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except Exception:  # noqa: BLE001  a legacy (non-zip) file
        names = re.findall(r"GLOBAL ([\w.]+)", reason)
    names = [n for n in names if n not in allowed_names()]
    if names:
        names = list(dict.fromkeys(names))
        return ("the global " if len(names) == 1 else "the globals ") + ", ".join(names), reason
    if "allowlisted" in reason or "unrecognized function" in reason:
        return f"an object torch's safe loader refuses ({reason})", reason
    return "", reason
