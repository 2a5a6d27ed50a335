"""Per-node order statistics and per-step layer sums of a session's layer times, in SQLite.

The writer computes them once, when it closes a session (``write_aggregates``: a few SQL passes
over ``layer_times_ns``, ~4 s per million layer rows), and stores them in the ``node_stats``
table with meta ``aggregates``; a summary then reads a few dozen numbers instead of the session's
rows. ``SessionAggregates`` (a mixin of ``SessionReader``) reads those tables when they are
there and still describe the file, and otherwise computes the same figures with the same SQL
(a session still being written, one whose writer was killed, one written before the tables
existed, or one changed since it was closed). Reading never writes into the session.

Whether the stored figures still describe the file: the writer stores the SQLite file change
counter (header bytes 24..27) the file will have once its last transaction commits; any later
write to the file (in rollback-journal mode, which a finished session is in) moves the counter.
"""
from __future__ import annotations

import json
import math
import sqlite3

from engine.session.schema import change_counter, closed_unchanged, ms_from_ns

# (index name, column): indexes earlier readers built into finished sessions; used when present
AGGREGATE_INDEXES = (("layer_times_node_fwd", "fwd_ns"), ("layer_times_node_bwd", "bwd_ns"),
                     ("layer_times_node_mem", "mem_bytes"), ("layer_times_node_peak", "peak_bytes"))
# the layer_times_ns columns summarised per node, and the per-step sums (stored as node 0)
NODE_COLUMNS = ("fwd_ns", "bwd_ns", "mem_bytes", "peak_bytes", "minor_faults")
STEP_COLUMNS = ("step_fwd_ns", "step_bwd_ns")
# the percentiles whose ranks the writer stores (p5..p95 spread and median of every table)
STORED_PERCENTILES = (5, 50, 95)
AGGREGATES_VERSION = 1


def stored_ranks(n: int, percentiles=STORED_PERCENTILES) -> set[int]:
    """The 0-based ranks of ``n`` sorted values around each percentile (floor and ceiling of
    (n - 1) x q / 100): a reader interpolating linearly between two neighbours finds both."""
    out = set()
    for q in percentiles:
        k = (n - 1) * q / 100.0
        out.update((math.floor(k), math.ceil(k)))
    return {r for r in out if 0 <= r < n}


def steady_row_filter(query) -> tuple[str, list]:
    """SQL condition (and arguments) on ``layer_times_ns`` leaving out the rows of profiled
    warm-up steps (none of them when every profiled step was warm-up), as
    ``analysis.layers.steady_layer_times`` does. ``query(sql, args) -> rows``."""
    warm = query("SELECT first_row, first_row + n - 1 FROM profiled_steps WHERE step IN "
                 "(SELECT step FROM steps WHERE warmup AND phase != 'test') ORDER BY rec", [])
    if not warm or len(warm) == query("SELECT count(*) FROM profiled_steps", [])[0][0]:
        return "", []
    if len(warm) <= 64:
        return (" AND NOT (" + " OR ".join("row BETWEEN ? AND ?" for _ in warm) + ")",
                [v for pair in warm for v in pair])
    return (" AND rec NOT IN (SELECT rec FROM profiled_steps WHERE step IN "
            "(SELECT step FROM steps WHERE warmup AND phase != 'test'))", [])


def _columns(query) -> set[str]:
    return {r[1] for r in query('PRAGMA table_info("layer_times_ns")', [])}


def _ranked(query, column: str, cond: str, args: list, wanted: dict[int, set[int]]) -> dict[int, dict]:
    """{node: {rank: value}} of ``column``'s sorted non-NULL values per node, for the ranks
    ``wanted[node]``: one sort of the column (a window function), the picked values leave SQLite."""
    if not wanted:
        return {}
    nodes = sorted(wanted)
    all_ranks = sorted(set().union(*wanted.values()))
    rows = query(f"SELECT node, rn, v FROM (SELECT node, {column} AS v, row_number() OVER "
                 f"(PARTITION BY node ORDER BY {column}) - 1 AS rn FROM layer_times_ns WHERE {column} IS NOT NULL"
                 f" AND node IN ({','.join('?' * len(nodes))}){cond}) WHERE rn IN ({','.join('?' * len(all_ranks))})",
                 [*nodes, *args, *all_ranks])
    out: dict[int, dict] = {n: {} for n in nodes}
    for node, rn, v in rows:
        if rn in wanted[node]:
            out[node][rn] = v
    return out


def compute_aggregates(query, ranks_of=None) -> dict:
    """The per-node and per-step aggregates of a session's steady layer rows, from SQL.

    ``query(sql, args) -> rows``; ``ranks_of(column, n) -> ranks`` names the 0-based ranks of the
    n sorted values to read (default ``stored_ranks``; only the median for ``minor_faults``).
    Returns {"nodes": {node int: {column: {"n", "sum", "min", "max", "at": {rank: value}}}},
    "steps": {column: same} for the per-step sums ("step_fwd_ns", "step_bwd_ns"), "fault_ns": the
    cost of one fault last recorded, or None}. ``mem_bytes`` and ``peak_bytes``: their ranks are
    read only when the node's values differ (mostly one value per node), ``peak_bytes`` never."""
    ranks_of = ranks_of or (lambda column, n: stored_ranks(n, (50,) if column == "minor_faults" else
                                                           STORED_PERCENTILES))
    cond, args = steady_row_filter(query)
    have = _columns(query)
    cols = [c for c in NODE_COLUMNS if c in have]
    aggs = ", ".join(f"count({c}), sum({c}), min({c}), max({c})" for c in cols)
    nodes: dict[int, dict] = {}
    for node, *vals in query(f"SELECT node, {aggs} FROM layer_times_ns WHERE 1{cond} GROUP BY node", args):
        nodes[node] = {c: {"n": vals[4 * i], "sum": vals[4 * i + 1], "min": vals[4 * i + 2], "max": vals[4 * i + 3],
                           "at": {}} for i, c in enumerate(cols)}
    for c in cols:
        wanted = {}
        for node, st in nodes.items():
            ranks = ranks_of(c, st[c]["n"]) if st[c]["n"] else set()
            if c == "peak_bytes" or not ranks:
                continue
            if st[c]["min"] == st[c]["max"]:  # one value: every rank holds it, no sort
                st[c]["at"] = {r: st[c]["min"] for r in ranks}
            else:
                wanted[node] = set(ranks)
        for node, at in _ranked(query, c, cond, args, wanted).items():
            nodes[node][c]["at"] = at
    fault_ns = None
    if "fault_ns" in have:
        got = query(f"SELECT fault_ns FROM layer_times_ns WHERE fault_ns IS NOT NULL{cond} ORDER BY row DESC LIMIT 1",
                    args)
        fault_ns = got[0][0] if got else None
    fwd, bwd = step_layer_sums(query)
    steps = {}
    for c, vals in (("step_fwd_ns", fwd), ("step_bwd_ns", bwd)):
        v = sorted(vals)
        steps[c] = {"n": len(v), "sum": sum(v), "min": v[0] if v else None, "max": v[-1] if v else None,
                    "at": {r: v[r] for r in ranks_of(c, len(v))} if v else {}}
    return {"nodes": nodes, "steps": steps, "fault_ns": fault_ns}


def step_layer_sums(query) -> tuple[list[int], list[int]]:
    """(forward ns, backward ns) summed over the nodes of each steady profiled step (warm-up
    left out unless every profiled step was warm-up), in step order; 0 where no node had a time."""
    warm_sql = "p.step IN (SELECT step FROM steps WHERE warmup AND phase != 'test')"
    steady = query(f"SELECT count(*) FROM profiled_steps p WHERE NOT {warm_sql}", [])[0][0]
    where = f" WHERE NOT {warm_sql}" if steady else ""
    # one pass in rec order, each step's rows found by row id: no sort
    rows = query("SELECT coalesce(sum(l.fwd_ns), 0), coalesce(sum(l.bwd_ns), 0) FROM profiled_steps p "
                 "LEFT JOIN layer_times_ns l ON l.row BETWEEN p.first_row AND p.first_row + p.n - 1"
                 f"{where} GROUP BY p.rec ORDER BY p.rec", [])
    return [r[0] for r in rows], [r[1] for r in rows]


def write_aggregates(con: sqlite3.Connection, path) -> bool:
    """Compute the aggregates of a closed session (``compute_aggregates``) and store them in
    ``node_stats`` and meta ``aggregates`` in one transaction, tagged with the change counter the
    file has once it commits. The connection must be in rollback-journal mode (the writer's
    last step). False (nothing stored) when it cannot be (a table missing, an odd value, I/O)."""
    def query(sql, args):
        return con.execute(sql, args).fetchall()
    try:
        if "node_stats" not in {r[0] for r in query("SELECT name FROM sqlite_master WHERE type = 'table'", [])}:
            return False
        if query("PRAGMA journal_mode", [])[0][0].lower() != "delete":
            return False
        agg = compute_aggregates(query)
        counter = change_counter(path)
        if counter is None:
            return False
        rows = [(node, c, s["n"], s["sum"], s["min"], s["max"], json.dumps({str(k): v for k, v in s["at"].items()}))
                for node, by_col in agg["nodes"].items() for c, s in by_col.items()]
        rows += [(0, c, s["n"], s["sum"], s["min"], s["max"], json.dumps({str(k): v for k, v in s["at"].items()}))
                 for c, s in agg["steps"].items()]
        con.execute("BEGIN")
        con.execute("DELETE FROM node_stats")
        con.executemany("INSERT INTO node_stats VALUES (?,?,?,?,?,?,?)", rows)
        con.execute("INSERT OR REPLACE INTO meta VALUES ('aggregates', ?)", (json.dumps({
            "version": AGGREGATES_VERSION, "change_counter": (counter + 1) & 0xFFFFFFFF,
            "percentiles": list(STORED_PERCENTILES), "fault_ns": agg["fault_ns"]}),))
        con.execute("COMMIT")
    except (sqlite3.Error, OSError, ValueError, TypeError, OverflowError):
        try:
            con.execute("ROLLBACK")
        except sqlite3.Error:
            pass
        return False
    return change_counter(path) == (counter + 1) & 0xFFFFFFFF


def value_at(st: dict, rank: int):
    """The value at 0-based ``rank`` of one column's aggregate (``compute_aggregates``): every
    rank holds the one value of a column whose smallest and largest values are equal."""
    return st["min"] if st["min"] == st["max"] else st["at"][rank]


def node_column_stats(column: str, st: dict, ranks) -> dict:
    """One node's aggregate of one column as ``node_order_stats`` gives it ({"n", "sum", "max",
    "at"}), with the ranks ``ranks(n)`` names."""
    if column == "peak_bytes":
        return {"n": None, "sum": None, "max": st["max"], "at": {}}
    if column == "mem_bytes" and st["min"] == st["max"]:  # one value per node: n given as 1
        lo = st["min"]
        return {"n": 0 if lo is None else 1, "sum": lo, "max": lo, "at": {} if lo is None else {r: lo for r in ranks(1)}}
    n = st["n"]
    return {"n": n, "sum": st["sum"], "max": st["max"], "at": {r: value_at(st, r) for r in ranks(n)} if n else {}}


def _covers(agg: dict, ranks_of) -> bool:
    """Whether ``agg`` holds every rank ``ranks_of`` asks of each column."""
    if ranks_of is None:
        return True
    for by_col in (*agg["nodes"].values(), agg["steps"]):
        for c, st in by_col.items():
            if c == "peak_bytes" or not st["n"] or st["min"] == st["max"]:
                continue
            if not set(ranks_of(c, st["n"])) <= set(st["at"]):
                return False
    return True


class SessionAggregates:
    """The SQL aggregates of ``SessionReader`` (see the module docstring)."""

    def _stored_aggregates(self) -> dict | None:
        """The aggregates the writer stored (as ``compute_aggregates`` returns them), when they are
        there and the file has not been written since; else None."""
        if getattr(self, "_stored", False) is not False:
            return self._stored
        self._stored = None
        tag = self.meta.get("aggregates")
        if not isinstance(tag, dict) or tag.get("version") != AGGREGATES_VERSION:
            return None
        if not closed_unchanged(self.path, self.meta):
            return None  # written since the writer closed it: the figures may no longer hold
        try:
            rows = self._query("SELECT node, col, n, sum, min, max, at FROM node_stats")
            nodes: dict[int, dict] = {}
            steps = {}
            for node, col, n, total, lo, hi, at in rows:
                st = {"n": n, "sum": total, "min": lo, "max": hi,
                      "at": {int(k): v for k, v in json.loads(at).items()}}
                if node == 0:
                    steps[col] = st
                else:
                    nodes.setdefault(node, {})[col] = st
        except (ValueError, TypeError, AttributeError):
            return None
        if set(steps) != set(STEP_COLUMNS):
            return None
        fault_ns = tag.get("fault_ns")
        self._stored = {"nodes": nodes, "steps": steps,
                        "fault_ns": fault_ns if isinstance(fault_ns, (int, float)) else None}
        return self._stored

    def has_aggregates(self) -> bool:
        """True when the summary reads the aggregates the writer stored (see the module
        docstring); False when it computes them from the rows (same figures, slower)."""
        return self._stored_aggregates() is not None

    def aggregates(self, ranks_of=None) -> dict:
        """``compute_aggregates`` of this session holding at least the ranks ``ranks_of(column,
        n)`` names (default: ``stored_ranks``): the stored figures when they hold them all, else
        computed now from the rows (read-only; kept for this reader unless the session is still
        being written). Read a column's value at a rank with ``value_at``."""
        for agg in (self._stored_aggregates(), getattr(self, "_computed", None)):
            if agg is not None and _covers(agg, ranks_of):
                return agg
        self._check_time_columns()
        agg = compute_aggregates(lambda sql, args: self._query(sql, args), ranks_of)
        if self.status != "running":
            self._computed = agg
        return agg

    def ensure_aggregate_indexes(self) -> bool:
        """Whether the summary can read this session's aggregates without sorting its rows (the
        writer's stored ``node_stats``). Kept for callers of earlier versions: it no longer
        builds indexes, as reading never writes into a session."""
        return self.has_aggregates()

    def _steady_row_filter(self) -> tuple[str, list]:
        """``steady_row_filter`` of this session, read once per reader of a finished session."""
        cached = getattr(self, "_steady_filter", None)
        if cached is not None:
            return cached
        out = steady_row_filter(lambda sql, args: self._query(sql, args))
        if self.status != "running":  # a session being written may still gain profiled steps
            self._steady_filter = out
        return out

    def node_order_stats(self, column: str, ranks) -> dict[str, dict]:
        """Per node, over the steady profiled steps (warm-up left out), one ``layer_times_ns``
        column (``NODE_COLUMNS``): {node_id: {"n": values measured (NULL left out), "sum": their
        exact integer sum, "max": the largest, "at": {rank: value} for each 0-based rank of the
        sorted values that ``ranks(n)`` names}}. For ``mem_bytes`` holding one value per node, n
        is given as 1 (every percentile is that value); for ``peak_bytes`` only "max" is read.
        Nodes in id order; a node with no steady row is left out. ValueError for another column."""
        if column not in NODE_COLUMNS:
            raise ValueError(column)
        agg = self.aggregates(lambda c, n: set(ranks(n)) if c == column else set())
        names = dict(self._query("SELECT id, node_id FROM nodes"))
        out = {}
        for node in sorted(agg["nodes"]):
            st = agg["nodes"][node].get(column)
            if st is not None:
                out[names.get(node, str(node))] = node_column_stats(column, st, ranks)
        return out

    def _check_time_columns(self) -> None:
        """SessionError when a per-layer time is not a finite number: SQL sums and orders would
        silently count text as 0 where row-by-row reading (``ms_from_ns``) refuses it. One scan of
        the table (index probes where an earlier version built indexes), done once per reader."""
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
        return step_layer_sums(lambda sql, args: self._query(sql, args))
