"""The few nn.Modules torch lacks for our layer kinds (imported only when building)."""
from __future__ import annotations

import torch
import torch.nn as nn


class FlatLinear(nn.Linear):
    """A linear layer that flattens a CxHxW input first (same parameters as nn.Linear)."""

    def forward(self, x):
        return super().forward(x.flatten(1) if x.dim() > 2 else x)


class Add(nn.Module):
    """Element-wise sum of its inputs, out of place (a residual skip)."""

    def forward(self, *xs):
        out = xs[0]
        for x in xs[1:]:
            out = out + x
        return out


class Concat(nn.Module):
    """Concatenation of its inputs along the channel dimension."""

    def forward(self, *xs):
        return torch.cat(xs, dim=1)
