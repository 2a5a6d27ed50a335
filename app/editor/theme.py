"""Colours, icons and short labels shared by the editor widgets.

Colours follow the application palette (light or dark), so the canvas matches whichever
theme the main window uses; each layer family has one accent colour everywhere.
"""
from __future__ import annotations

import math

from functools import lru_cache

from PySide6.QtGui import QColor, QIcon, QPalette

from assets import ASSETS_DIR

ICONS_DIR = ASSETS_DIR / "icons"

FAMILY_COLORS = {
    "input": "#64748B",
    "convolution": "#3B82F6",
    "pooling": "#0EA5B7",
    "normalisation": "#8B5CF6",
    "activation": "#F59E0B",
    "linear": "#10B981",
    "merge": "#EC4899",
    "regularisation": "#94A3B8",
}

FAMILY_TITLES = {
    "input": "Input",
    "convolution": "Convolution",
    "pooling": "Pooling",
    "normalisation": "Normalisation",
    "activation": "Activation",
    "linear": "Linear",
    "merge": "Merge",
    "regularisation": "Regularisation",
}

ERROR_COLOR = "#E5484D"

# OrRd, a sequential scale that reads as "more costly" on light and dark backgrounds
_COST_STOPS = ((0.0, (254, 240, 217)), (0.5, (252, 141, 89)), (1.0, (179, 0, 0)))


# a speed-up against a baseline, diverging around 1x on a log scale: red slower, green faster (the
# comparison's heat map and the canvas coloured by speed-up use these same three stops)
SPEEDUP_SLOWER, SPEEDUP_NEUTRAL, SPEEDUP_FASTER = (240, 89, 94), (42, 46, 53), (52, 211, 153)


def speedup_span(speedups) -> float:
    """The half-width in log2 units of a diverging speed-up scale holding ``speedups`` (x, > 0):
    the largest |log2 x|, at least 1 (a scale from 0.5x to 2x)."""
    logs = [abs(math.log2(v)) for v in speedups if v is not None and v > 0 and math.isfinite(v)]
    return max([1.0] + logs)


def speedup_color(speedup: float, span: float = 1.0) -> QColor:
    """Colour of a speed-up ``speedup`` (x against the baseline) on a log2 scale of half-width
    ``span``: 1x the neutral grey, slower towards red, faster towards green (clipped at 2**±span)."""
    t = 0.5 + max(-1.0, min(1.0, math.log2(speedup) / span)) / 2 if speedup > 0 else 0.0
    stops = ((0.0, SPEEDUP_SLOWER), (0.5, SPEEDUP_NEUTRAL), (1.0, SPEEDUP_FASTER))
    for (a, ca), (b, cb) in zip(stops, stops[1:]):
        if t <= b:
            f = (t - a) / (b - a)
            return QColor(*(round(x + (y - x) * f) for x, y in zip(ca, cb)))
    return QColor(*SPEEDUP_FASTER)


def family_color(family: str) -> QColor:
    return QColor(FAMILY_COLORS.get(family, "#94A3B8"))


def cost_color(t: float) -> QColor:
    """Colour for a normalised cost ``t`` in [0, 1]."""
    t = min(1.0, max(0.0, t))
    for (a, ca), (b, cb) in zip(_COST_STOPS, _COST_STOPS[1:]):
        if t <= b:
            f = (t - a) / (b - a)
            return QColor(*(round(x + (y - x) * f) for x, y in zip(ca, cb)))
    return QColor(*_COST_STOPS[-1][1])


def readable_text(bg: QColor) -> QColor:
    """Black or white, whichever reads better on ``bg``."""
    lum = 0.2126 * bg.redF() + 0.7152 * bg.greenF() + 0.0722 * bg.blueF()
    return QColor("#111318") if lum > 0.55 else QColor("#F5F6F8")


def mix(a: QColor, b: QColor, t: float) -> QColor:
    """``a`` moved a fraction ``t`` towards ``b``."""
    return QColor(round(a.red() + (b.red() - a.red()) * t), round(a.green() + (b.green() - a.green()) * t),
                  round(a.blue() + (b.blue() - a.blue()) * t))


class CanvasColors:
    """The canvas palette, derived from the widget palette so light and dark themes both work."""

    def __init__(self, palette: QPalette):
        base = palette.color(QPalette.Base)
        self.dark = base.lightness() < 128
        text = palette.color(QPalette.Text)
        self.background = mix(base, QColor("#000000"), 0.04) if not self.dark else mix(base, QColor("#000000"), 0.2)
        self.grid = mix(self.background, text, 0.13)
        self.node = mix(base, QColor("#FFFFFF"), 0.0 if not self.dark else 0.06)
        self.node_border = mix(self.node, text, 0.22)
        self.text = text
        self.muted = mix(text, base, 0.42)
        self.edge = mix(self.background, text, 0.45)
        self.edge_hot = palette.color(QPalette.Highlight)
        self.selected = palette.color(QPalette.Highlight)
        self.label_bg = self.background
        self.error = QColor(ERROR_COLOR)


@lru_cache(maxsize=None)
def icon_path(kind: str, family: str = "") -> str:
    """The SVG drawn for ``kind``, else for its family, else an empty string."""
    for name in (kind, family):
        p = ICONS_DIR / f"{name}.svg"
        if name and p.is_file():
            return str(p)
    return ""


def icon(kind: str, family: str = "") -> QIcon:
    path = icon_path(kind, family)
    return QIcon(path) if path else QIcon()


_PARAM_LABELS = {
    "out_channels": "{} ch",
    "out_features": "{} out",
    "kernel": "k{}",
    "stride": "s{}",
    "padding": "p{}",
    "output_size": "{} out",
    "size": "size {}",
    "p": "p={}",
    "negative_slope": "slope {}",
}
_HIDE_WHEN = {"stride": (0, 1), "padding": (0,)}


def value_text(v) -> str:
    if isinstance(v, (list, tuple)):
        return "x".join(str(x) for x in v) if len(set(map(str, v))) > 1 else str(v[0])
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


def key_params_text(kind, params: dict) -> str:
    """A compact line of a node's key parameters, e.g. ``64 ch  k7  s2  p3``."""
    if kind is None:
        return ""
    resolved = kind.resolved(params)
    parts = []
    for name in kind.key_params:
        if name not in resolved:
            continue
        v = resolved[name]
        if v in _HIDE_WHEN.get(name, ()) and not isinstance(v, bool):
            continue
        parts.append(_PARAM_LABELS.get(name, name + " {}").format(value_text(v)))
    return "  ".join(parts)


def shape_text(shape) -> str:
    return "x".join(str(d) for d in shape) if shape else ""
