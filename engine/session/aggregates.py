"""Per-node order statistics and per-step sums of a session's layer times, computed in SQLite.

``SessionAggregates`` is a mixin of ``SessionReader`` (it reads through the reader's ``_query``,
``_lock`` and ``_con``): a long session is summarised without its rows in Python memory, from the
(node, column) indexes ``AGGREGATE_INDEXES`` names.
"""
from __future__ import annotations

import sqlite3

from engine.session.schema import ms_from_ns

# (index name, column): per-node order statistics of a long session come from these without a sort
AGGREGATE_INDEXES = (("layer_times_node_fwd", "fwd_ns"), ("layer_times_node_bwd", "bwd_ns"),
                     ("layer_times_node_mem", "mem_bytes"), ("layer_times_node_peak", "peak_bytes"))


def create_aggregate_indexes(con: sqlite3.Connection) -> None:
    """Create the ``AGGREGATE_INDEXES`` on a session's connection and commit (the reader does,
    on the first summary of a finished session it may write: one sort per column, ~1 s per million
    layer rows; the writer does not, as the indexes would add ~25% to every session's size).
    sqlite3.Error when the file cannot be written."""
    for name, column in AGGREGATE_INDEXES:
        con.execute(f"CREATE INDEX IF NOT EXISTS {name} ON layer_times_ns(node, {column})")
    con.commit()


class SessionAggregates:
    """The SQL aggregates of ``SessionReader`` (see the module docstring)."""

    def ensure_aggregate_indexes(self) -> bool:
        """Make sure the (node, column) indexes ``node_order_stats`` reads are there; True when they
        are. A finished session that lacks them gets them once (one sort of each column, written
        into the file); a session still being written, or one that cannot be written, is read
        without them (the same figures, found by sorting on each read)."""
        names = {r[0] for r in self._query("SELECT name FROM sqlite_master WHERE type = 'index'")}
        if all(name in names for name, _ in AGGREGATE_INDEXES):
            return True
        if self.status == "running":
            return False
        with self._lock:
            try:
                create_aggregate_indexes(self._con)
            except sqlite3.Error:
                try:
                    self._con.rollback()
                except sqlite3.Error:
                    pass
                return False
        return True

    def _steady_row_filter(self) -> tuple[str, list]:
        """SQL condition (and arguments) on ``layer_times_ns.row`` leaving out the rows of profiled
        warm-up steps (none of them when every profiled step was warm-up), as
        ``analysis.layers.steady_layer_times`` does. Only row ids are tested, which every index holds.
        Read once per reader of a finished session (each call scans the steps table)."""
        cached = getattr(self, "_steady_filter", None)
        if cached is not None:
            return cached
        out = self._steady_row_filter_read()
        if self.status != "running":  # a session being written may still gain profiled steps
            self._steady_filter = out
        return out

    def _steady_row_filter_read(self) -> tuple[str, list]:
        warm = self._query("SELECT first_row, first_row + n - 1 FROM profiled_steps WHERE step IN "
                           "(SELECT step FROM steps WHERE warmup AND phase != 'test') ORDER BY rec")
        if not warm or len(warm) == self.profiled_step_count():
            return "", []
        if len(warm) <= 64:
            return (" AND NOT (" + " OR ".join("row BETWEEN ? AND ?" for _ in warm) + ")",
                    [v for pair in warm for v in pair])
        return (" AND rec NOT IN (SELECT rec FROM profiled_steps WHERE step IN "
                "(SELECT step FROM steps WHERE warmup AND phase != 'test'))", [])

    def node_order_stats(self, column: str, ranks) -> dict[str, dict]:
        """Per node, over the steady profiled steps (warm-up left out), one ``layer_times_ns``
        column (``fwd_ns``, ``bwd_ns``, ``mem_bytes``, ``peak_bytes``): {node_id: {"n": values
        measured (NULL left out), "sum": their exact integer sum, "max": the largest, "at":
        {rank: value} for each 0-based rank of the sorted values that ``ranks(n)`` names}}. For
        ``mem_bytes`` holding one value per node, n is given as 1 (every percentile is that value);
        for ``peak_bytes`` only "max" is read.

        Computed in SQLite from the (node, column) indexes (``ensure_aggregate_indexes``), so a
        session of any length is summarised without its rows in memory. ValueError for another
        column."""
        if column not in dict((c, n) for n, c in AGGREGATE_INDEXES):
            raise ValueError(column)
        self._check_time_columns()
        cond, args = self._steady_row_filter()
        out = {}
        for node, name in sorted(self._query("SELECT id, node_id FROM nodes")):
            if not self._query(f"SELECT EXISTS(SELECT 1 FROM layer_times_ns WHERE node = ?{cond})", [node, *args])[0][0]:
                continue
            if column == "peak_bytes":  # only its maximum is shown: one index probe
                top = self._query(f"SELECT max({column}) FROM layer_times_ns WHERE node = ?{cond}", [node, *args])[0][0]
                out[name] = {"n": None, "sum": None, "max": top, "at": {}}
                continue
            if column == "mem_bytes":  # bytes are mostly one value per node (the activation size):
                # one aggregate per query: SQLite then reads min and max off the index ends
                lo_v = self._query(f"SELECT min({column}) FROM layer_times_ns WHERE node = ?{cond}", [node, *args])[0][0]
                hi_v = self._query(f"SELECT max({column}) FROM layer_times_ns WHERE node = ?{cond}", [node, *args])[0][0]
                if lo_v == hi_v:  # then every rank holds it, whatever n is: two index probes, no walk
                    out[name] = {"n": 0 if lo_v is None else 1, "sum": lo_v, "max": hi_v,
                                 "at": {} if lo_v is None else {r: lo_v for r in ranks(1)}}
                    continue
            n, total, top = self._query(f"SELECT count({column}), sum({column}), max({column}) FROM layer_times_ns "
                                        f"WHERE node = ? AND {column} IS NOT NULL{cond}", [node, *args])[0]
            at = {}
            for r in sorted(set(ranks(n))) if n else ():
                if r in at:
                    continue
                # walk the index from the nearer end: the p95 is 5% from the top
                desc = r > (n - 1) / 2
                off = (n - 1 - r - 1) if desc else r
                off = max(off, 0)
                vals = self._query(f"SELECT {column} FROM layer_times_ns WHERE node = ? AND {column} IS NOT NULL"
                                   f"{cond} ORDER BY {column} {'DESC' if desc else ''} LIMIT 2 OFFSET ?",
                                   [node, *args, off])
                first = (n - 1 - off) if desc else off
                for i, (v,) in enumerate(vals):
                    at[first - i if desc else first + i] = v
            out[name] = {"n": n, "sum": total, "max": top, "at": at}
        return out

    def _check_time_columns(self) -> None:
        """SessionError when a per-layer time is not a finite number: SQL sums and orders would
        silently count text as 0 where row-by-row reading (``ms_from_ns``) refuses it. One scan of
        the table, done once per reader."""
        if getattr(self, "_times_checked", False):
            return
        odd = "typeof({c}) IN ('text', 'blob') OR (typeof({c}) = 'real' AND abs({c}) > 1e308)"  # 1e308+: inf
        if self._has_time_indexes():
            bad = self._odd_extremes(odd)
        else:
            bad = self._query(f"SELECT fwd_ns FROM layer_times_ns WHERE {odd.format(c='fwd_ns')} UNION ALL "
                              f"SELECT bwd_ns FROM layer_times_ns WHERE {odd.format(c='bwd_ns')} LIMIT 1")
        if bad:
            ms_from_ns(bad[0][0])  # raises the same one-line SessionError as reading it row by row
        self._times_checked = True

    def _has_time_indexes(self) -> bool:
        names = {r[0] for r in self._query("SELECT name FROM sqlite_master WHERE type = 'index'")}
        return {"layer_times_node_fwd", "layer_times_node_bwd"} <= names

    def _odd_extremes(self, odd: str) -> list:
        """The odd values (``odd``: an SQL condition on ``{c}``) among each node's smallest and
        largest ``fwd_ns`` and ``bwd_ns``, read off the (node, column) indexes: SQLite orders
        numbers before text before blobs, so any text or blob is a node's largest value and an
        infinite one its smallest or largest number. Index probes only, no scan."""
        nodes, node = [], None
        while True:  # each distinct node by one probe of the index
            node = self._query("SELECT min(node) FROM layer_times_ns" + ("" if node is None else " WHERE node > ?"),
                               [] if node is None else [node])[0][0]
            if node is None:
                break
            nodes.append(node)
        for c in ("fwd_ns", "bwd_ns"):
            cond = odd.format(c="v")
            for node in nodes:
                for agg in ("min", "max"):  # one aggregate per query: read off the index end
                    v = self._query(f"SELECT {agg}({c}) FROM layer_times_ns WHERE node = ?", [node])[0][0]
                    if v is not None and self._query(f"SELECT 1 FROM (SELECT ? AS v) WHERE {cond}", [v]):
                        return [(v,)]
        return []

    def step_layer_sums(self) -> tuple[list[int], list[int]]:
        """(forward ns, backward ns) summed over the nodes of each steady profiled step (warm-up
        left out unless every profiled step was warm-up), in step order; 0 where no node had a time."""
        self._check_time_columns()
        warm_sql = "step IN (SELECT step FROM steps WHERE warmup AND phase != 'test')"
        steady = self._query(f"SELECT count(*) FROM profiled_steps WHERE NOT {warm_sql}")[0][0]
        where = f" WHERE NOT {warm_sql}" if steady else ""
        where = where.replace("step IN", "p.step IN")
        # one pass in rec order, each step's rows found by row id: no sort
        rows = self._query("SELECT coalesce(sum(l.fwd_ns), 0), coalesce(sum(l.bwd_ns), 0) FROM profiled_steps p "
                           "LEFT JOIN layer_times_ns l ON l.row BETWEEN p.first_row AND p.first_row + p.n - 1"
                           f"{where} GROUP BY p.rec ORDER BY p.rec")
        return [r[0] for r in rows], [r[1] for r in rows]
