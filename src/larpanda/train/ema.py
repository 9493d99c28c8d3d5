"""An exponential moving average of a task's weights (``train.ema_decay``), the model that validation sees.

After every applied optimizer update ``shadow ← d·shadow + (1 − d)·current`` over the task's
floating-point state: parameters and floating buffers (BatchNorm running statistics, which thus follow the
averaged weights). The decay warms up as ``d_t = min(decay, (1 + t) / (10 + t))`` for the t-th update, so
early averages are not dominated by the random initialisation (docs/design.md §2.4). Integer buffers
(``num_batches_tracked``) are not averaged. Its effect on the `cpu-long` recipes, measured: docs/benchmarks.md
"A moving average of the weights (E1)".

This is the supervised recipe's weight averaging (Polyak averaging), not the SSL teacher of
`larpanda.ssl.sonata`, whose momentum follows its own schedule inside the task.
"""

from __future__ import annotations

import contextlib

import torch


class WeightEMA:
    """The average of ``module``'s floating-point state; ``decay`` in (0, 1)."""

    def __init__(self, module: torch.nn.Module, decay: float):
        decay = float(decay)
        if not 0.0 < decay < 1.0:
            raise ValueError(f"train.ema_decay must lie in (0, 1), got {decay}")
        self.decay, self.updates = decay, 0
        state = module.state_dict()
        self.names = [k for k, v in state.items() if v.is_floating_point()]
        self.shadow = {k: state[k].detach().clone() for k in self.names}

    def current_decay(self) -> float:
        return min(self.decay, (1.0 + self.updates) / (10.0 + self.updates))

    @torch.no_grad()
    def update(self, module: torch.nn.Module) -> None:
        """Fold ``module``'s current state into the average (after one optimizer update)."""
        d = self.current_decay()
        state = module.state_dict()
        torch._foreach_lerp_([self.shadow[k] for k in self.names], [state[k].detach() for k in self.names], 1.0 - d)
        self.updates += 1

    @torch.no_grad()
    def _assign(self, module: torch.nn.Module, tensors: dict) -> None:
        state = module.state_dict()
        for k in self.names:
            state[k].copy_(tensors[k])

    def copy_to(self, module: torch.nn.Module) -> None:
        """Overwrite ``module``'s floating-point state with the average."""
        self._assign(module, self.shadow)

    @contextlib.contextmanager
    def swapped_in(self, module: torch.nn.Module):
        """``module`` holds the average inside the block and its own weights again after it."""
        state = module.state_dict()
        own = {k: state[k].detach().clone() for k in self.names}
        self.copy_to(module)
        try:
            yield module
        finally:
            self._assign(module, own)

    def state_dict(self) -> dict:
        return {"decay": self.decay, "updates": self.updates, "shadow": dict(self.shadow)}

    def load_state_dict(self, st: dict) -> None:
        missing = set(self.names) - set(st["shadow"])
        if missing:
            raise KeyError(f"EMA state lacks {len(missing)} entries (e.g. {sorted(missing)[0]})")
        self.updates = int(st["updates"])
        with torch.no_grad():
            for k in self.names:
                self.shadow[k].copy_(st["shadow"][k])
