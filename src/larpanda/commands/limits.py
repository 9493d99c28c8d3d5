"""Inference limit options shared by ``predict``, ``evaluate`` and ``embed`` (the guard itself is
`larpanda.io.memory`). Light module: no torch import, so ``--help`` stays fast."""

from __future__ import annotations


def add_limit_args(p) -> None:
    """``--max-memory-gb``, ``--max-points`` and ``--skip-bad-events`` for an inference command."""
    p.add_argument("--max-memory-gb", type=float, default=None,
                   help="refuse an event whose estimated inference memory is above this many GB, before its "
                   "forward pass (default: 80%% of the memory available at start; docs/reliability.md)")
    p.add_argument("--max-points", type=int, default=None, help="refuse an event with more points after the energy cut")
    p.add_argument("--skip-bad-events", action="store_true",
                   help="skip events above these limits with a warning, counted in the output, instead of stopping")


class limits_from_args:
    """Context manager: `larpanda.io.memory.set_limits` from parsed ``args``, restored on exit."""

    def __init__(self, args):
        self.args = args

    def __enter__(self):
        from ..io.memory import set_limits

        self.old = set_limits(self.args.max_memory_gb, self.args.max_points)
        return self

    def __exit__(self, *exc):
        from ..io.memory import set_limits

        set_limits(**self.old)
        return False
