"""Automatic layout of a net graph: layered top to bottom, branches side by side, and long
nets wrapped into lanes so a whole ResNet fits a window legibly. Pure Python (no Qt)."""
from __future__ import annotations

from engine import INPUT_ID, NetSpec

NODE_W = 172.0
NODE_H = 44.0
COL_GAP = 44.0   # room for skip edges routed beside a column
ROW_GAP = 26.0   # room for the shape label on an edge
LANE_GAP = 64.0  # room for the edge climbing from the bottom of one lane to the next


def graph_of(spec: NetSpec) -> tuple[list[str], dict[str, list[str]]]:
    """Node ids (net input first) and each node's inputs, dropping references to missing nodes."""
    ids = [INPUT_ID] + [n.id for n in spec.nodes]
    known = set(ids)
    preds = {INPUT_ID: []}
    for i, n in enumerate(spec.nodes):
        preds[n.id] = [r for r in spec.inputs_of(i) if r in known and r != n.id]
    return ids, preds


def ranks_of(ids: list[str], preds: dict[str, list[str]]) -> dict[str, int]:
    """Longest-path layer of each node; nodes caught in a cycle go below everything else."""
    rank: dict[str, int] = {}
    pending = list(ids)
    while pending:
        progressed = False
        rest = []
        for v in pending:
            ps = preds.get(v, [])
            if all(p in rank for p in ps):
                rank[v] = 1 + max((rank[p] for p in ps), default=-1 if v == INPUT_ID else 0)
                progressed = True
            else:
                rest.append(v)
        if not progressed:  # a cycle: break it at the first stuck node in spec order
            v = rest.pop(0)
            rank[v] = 1 + max((rank[p] for p in preds.get(v, []) if p in rank), default=0)
        pending = rest
    return rank


def _columns(ids, preds, rank) -> dict[str, int]:
    order = {v: i for i, v in enumerate(ids)}
    first_consumer: dict[str, str] = {}
    for v in ids:
        for p in preds[v]:
            first_consumer.setdefault(p, v)
    col: dict[str, int] = {}
    taken: set[tuple[int, int]] = set()
    for v in sorted(ids, key=lambda x: (rank[x], order[x])):
        r = rank[v]
        want = None
        for p in preds[v]:
            if first_consumer.get(p) == v and (r, col[p]) not in taken:
                want = col[p]
                break
        if want is None:
            c = col[preds[v][0]] + 1 if preds[v] else 0
            while (r, c) in taken:
                c += 1
            want = c
        col[v] = want
        taken.add((r, want))
    return col


def _segments(ids, preds, rank) -> list[tuple[int, int]]:
    """Rank ranges that can be cut apart: exactly one edge crosses each cut."""
    top = max(rank.values())
    crossing = [0] * (top + 2)  # crossing[r]: edges spanning the boundary between r-1 and r
    for v in ids:
        for p in preds[v]:
            for r in range(rank[p] + 1, rank[v] + 1):
                crossing[r] += 1
    per_rank = [0] * (top + 1)
    for v in ids:
        per_rank[rank[v]] += 1
    cuts = [r for r in range(1, top + 1) if crossing[r] == 1 and per_rank[r] == 1 and per_rank[r - 1] == 1]
    bounds = [0] + cuts + [top + 1]
    return [(bounds[i], bounds[i + 1]) for i in range(len(bounds) - 1)]


def _pack(segments, limit: int) -> list[tuple[int, int]]:
    """Greedy lanes of consecutive segments, each at most ``limit`` ranks tall where possible."""
    out: list[list[int]] = []
    for a, b in segments:
        if out and b - out[-1][0] <= limit:
            out[-1][1] = b
        else:
            out.append([a, b])
    return [(a, b) for a, b in out]


def layered_layout(spec: NetSpec, view: tuple[float, float] = (1100.0, 800.0)) -> dict[str, tuple[float, float]]:
    """Top-left corner of every node (and of the net input, id ``'input'``) in scene units.

    ``view`` is the size of the view the net should fill: long chains are wrapped into
    side-by-side lanes at places where only one edge runs, choosing the fewest lanes that
    let the whole net be drawn largest (up to actual size) in such a view.
    """
    vw, vh = max(1.0, view[0] - 48), max(1.0, view[1] - 48)
    ids, preds = graph_of(spec)
    rank = ranks_of(ids, preds)
    col = _columns(ids, preds, rank)
    segments = _segments(ids, preds, rank)
    row_h = NODE_H + ROW_GAP
    col_w = NODE_W + COL_GAP

    maxcol = [0] * (max(rank.values()) + 1)
    for v in ids:
        maxcol[rank[v]] = max(maxcol[rank[v]], col[v])

    def geometry(limit):
        packed = _pack(segments, limit)
        widths = [(max(maxcol[a:b]) + 1) * col_w - COL_GAP for a, b in packed]
        width = sum(widths) + LANE_GAP * (len(packed) - 1)
        height = max(b - a for a, b in packed) * row_h - ROW_GAP
        return packed, widths, width, height

    # every lane height worth trying: the height of each run of consecutive segments
    limits = sorted({b - a for i, (a, _) in enumerate(segments) for (_, b) in segments[i:]}, reverse=True)
    best = None
    for limit in limits:
        packed, widths, w, h = geometry(limit)
        scale = min(1.0, vw / w, vh / h)
        if best is None or scale > best[0] * 1.02:  # fewer lanes unless clearly better
            best = (scale, packed, widths)
    _, packed, widths = best
    pos: dict[str, tuple[float, float]] = {}
    x0 = 0.0
    for (a, b), w in zip(packed, widths):
        for v in ids:
            if a <= rank[v] < b:
                pos[v] = (x0 + col[v] * col_w, (rank[v] - a) * row_h)
        x0 += w + LANE_GAP
    return pos
