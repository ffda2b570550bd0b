"""Exponential moving average of trained weights (the weights that get exported and sampled).

Kept in float32 on the training device whatever the autocast precision, updated with fused
foreach kernels and no host synchronisation. The effective decay warms up as
``min(decay, (1 + n) / (10 + n))`` so early, fast-changing weights are not averaged over a
window longer than the run itself.
"""

from __future__ import annotations

import torch
from torch import nn


class EMA:
    def __init__(self, modules: dict[str, nn.Module], decay: float = 0.999):
        self.decay = float(decay)
        self.num_updates = 0
        self.names: list[str] = []
        self.shadow: list[torch.Tensor] = []
        for prefix, module in modules.items():
            for name, param in module.named_parameters():
                if param.requires_grad:
                    self.names.append(f"{prefix}.{name}")
                    self.shadow.append(param.detach().float().clone())

    @staticmethod
    def _params(modules: dict[str, nn.Module]) -> list[torch.Tensor]:
        return [p for m in modules.values() for p in m.parameters() if p.requires_grad]

    def current_decay(self) -> float:
        n = self.num_updates
        return min(self.decay, (1.0 + n) / (10.0 + n))

    @torch.no_grad()
    def update(self, modules: dict[str, nn.Module]) -> None:
        params = self._params(modules)
        if len(params) != len(self.shadow):
            raise RuntimeError("EMA: the set of trained parameters changed since the EMA was created")
        weight = 1.0 - self.current_decay()
        torch._foreach_lerp_(self.shadow, [p.detach().float() for p in params], weight)
        self.num_updates += 1

    @torch.no_grad()
    def copy_to(self, modules: dict[str, nn.Module]) -> None:
        """Write the averaged weights into ``modules`` (e.g. fresh copies used for export)."""
        # By name: a fresh copy's parameters all require grad, whatever was frozen in training.
        params = {f"{prefix}.{name}": p for prefix, m in modules.items() for name, p in m.named_parameters()}
        for name, shadow in zip(self.names, self.shadow, strict=True):
            params[name].copy_(shadow.to(params[name].dtype))

    def state_dict(self) -> dict:
        return {"decay": self.decay, "num_updates": self.num_updates, "names": list(self.names), "shadow": [s.clone() for s in self.shadow]}

    def load_state_dict(self, state: dict) -> None:
        if list(state["names"]) != self.names:
            raise RuntimeError("EMA checkpoint does not match the trained parameters")
        self.decay = float(state["decay"])
        self.num_updates = int(state["num_updates"])
        for dst, src in zip(self.shadow, state["shadow"], strict=True):
            dst.copy_(src.to(dst.device))
