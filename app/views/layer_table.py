"""Per-layer table: id, kind, output shape, params, FLOPs, forward/backward ms, share of the step,
achieved GFLOP/s, activation bytes, the forward spread across steps (p5–p95), on the CPU page
faults with the allocator flag, and the bytes each layer holds for backward (measured) with their
share of the step's memory peak. Sortable by any column (numbers sort as numbers) and
copyable: Ctrl+C puts the selected rows (or all of them) on the clipboard as tab-separated text."""
from __future__ import annotations

import sys

import numpy as np
from PySide6.QtCore import QAbstractTableModel, QModelIndex, QSortFilterProxyModel, Qt
from PySide6.QtGui import QGuiApplication, QKeySequence
from PySide6.QtWidgets import QAbstractItemView, QHeaderView, QTableView, QVBoxLayout

import engine
from app.views.base import MonitorView, notice_label
from engine import fmt

COLUMNS = (  # key, title, formatter; the measured times come right after the name, so a narrow
    # dock shows what was measured first and the static facts (kind, shape, params) scroll in after
    ("id", "Layer", str),
    ("fwd_ms", "Fwd ms", fmt.fmt_ms),
    ("bwd_ms", "Bwd ms", fmt.fmt_ms),
    ("share", "Share", fmt.fmt_pct),
    ("gflops", "GFLOP/s", lambda v: fmt.fmt_num(float(v))),
    ("kind", "Kind", str),
    ("shape", "Output shape", lambda s: "×".join(str(d) for d in s) if s else "–"),
    ("params", "Params", fmt.fmt_count),
    ("flops", "FLOPs/sample", fmt.fmt_count),
    ("act_bytes", "Activations", fmt.fmt_bytes),
    ("fwd_spread", "Fwd p5–p95 ms", lambda v: f"{fmt.fmt_ms(v[0])}–{fmt.fmt_ms(v[1])}"),
    ("faults", "Page faults", fmt.fmt_count),
    ("alloc", "Allocator", lambda v: f"mostly allocator ({fmt.fmt_pct(v)})" if v >= 0.5 else fmt.fmt_pct(v)),
    ("saved", "Saved for bwd", fmt.fmt_bytes),
    ("peak_share", "Share of peak", fmt.fmt_pct),
    ("roof_fwd", "Fwd roofline", lambda v: f"{v[0]} · {fmt.fmt_pct(v[1])} of roof" if v[1] is not None else v[0]),
    ("roof_bwd", "Bwd roofline", lambda v: f"{v[0]} · {fmt.fmt_pct(v[1])} of roof" if v[1] is not None else v[0]),
    ("j_sample", "J/sample", lambda v: fmt.fmt_num(v[0]) + (f" ± {fmt.fmt_num(v[1])}" if v[1] is not None else "")),
)
TEXT_COLUMNS = ("id", "kind", "shape")  # left-aligned; numbers align right
SORT_ROLE = Qt.UserRole + 1


def table_rows(snap) -> list[dict]:
    """The table's rows from a snapshot (net order; None where a value was not measured):
    ``engine.snapshot_layer_rows`` under the table's column keys - fwd/bwd ms are the means,
    GFLOP/s the forward rate at the median time, as in the exports."""
    rows = engine.snapshot_layer_rows(snap)
    mem = {m["id"]: m for m in engine.layer_memory_table(snap)["layers"]} if rows else {}
    return [{"id": r["id"], "kind": r["kind"], "shape": tuple(r["out_shape"] or ()), "params": r["params"],
             "flops": r["flops"], "fwd_ms": r["fwd_mean_ms"], "bwd_ms": r["bwd_mean_ms"], "share": r["share"],
             "gflops": r["fwd_gflops"], "act_bytes": r["act_bytes"],
             "fwd_spread": (r["fwd_p5_ms"], r["fwd_p95_ms"]) if r["fwd_p5_ms"] is not None else None,
             "faults": r.get("minor_faults"), "alloc": r.get("alloc_share"),
             "saved": (mem.get(r["id"]) or {}).get("saved_bytes"),
             "peak_share": (mem.get(r["id"]) or {}).get("share_of_peak")}
            for r in rows]


def with_layer_energy(rows: list[dict], le: dict) -> list[dict]:
    """``rows`` with each layer's replayed energy (``engine.snapshot_layer_energy``) as "j_sample":
    (J per sample, 95 % half-width), None where the run measured none."""
    per = le.get("layers") or {}
    for r in rows:
        x = per.get(r["id"])
        r["j_sample"] = None if x is None or x["j_per_sample"] is None else (x["j_per_sample"], x["j_uncertainty"])
    return rows


def energy_note(le: dict) -> str:
    """One line under the table about the J/sample column: how it was measured and its coverage,
    or why it is absent ("" when the run did not ask for it)."""
    if not le.get("requested"):
        return ""
    if not le.get("available"):
        return f"J/sample: {le['reason']}"
    sim = "SIMULATED counter (a test profile, not a measurement); " if le.get("simulated") else ""
    text = (f"J/sample: {sim}each layer replayed alone, forward and backward, on {le['counter']}, idle "
            f"{fmt.fmt_num(le['idle_w'])} W subtracted, ± a 95 % interval. Sum over layers "
            f"{fmt.fmt_num(le['sum_j_per_sample'])} J/sample")
    if le.get("coverage") is not None:
        text += (f" = {fmt.fmt_pct(le['coverage'])} of the run's whole-step {fmt.fmt_num(le['run_j_per_sample'])} "
                 "J/sample")
        if le.get("coverage_above_idle") is not None:
            text += f" ({fmt.fmt_pct(le['coverage_above_idle'])} of it above idle)"
    return text + "."


class LayerTableModel(QAbstractTableModel):
    def __init__(self, parent=None):
        super().__init__(parent)
        self._rows: list[dict] = []

    def rowCount(self, parent=QModelIndex()) -> int:
        return 0 if parent.isValid() else len(self._rows)

    def columnCount(self, parent=QModelIndex()) -> int:
        return 0 if parent.isValid() else len(COLUMNS)

    def headerData(self, section, orientation, role=Qt.DisplayRole):
        if orientation == Qt.Horizontal and role == Qt.DisplayRole:
            return COLUMNS[section][1]
        if orientation == Qt.Horizontal and role == Qt.ToolTipRole:
            return {"share": "forward + backward time as a share of the mean step time",
                    "gflops": "achieved forward GFLOP/s (FLOPs per sample x batch / median forward time)",
                    "act_bytes": "output bytes for the run's batch size and precision",
                    "flops": "forward FLOPs per sample (PyTorch's FlopCounterMode)",
                    "fwd_spread": "forward time across steps: 5th to 95th percentile (a wide spread: the "
                                  "time moves from step to step, the median alone does not tell)",
                    "faults": "minor page faults during the layer's forward (CPU, latest profiled step): "
                              "first touches of fresh memory",
                    "saved": "bytes of the tensors autograd keeps for this layer's backward and that this "
                             "layer created (measured on sampled steps; each storage once, weights left out)",
                    "peak_share": "saved bytes as a share of the step's memory peak (CUDA: allocator; CPU: "
                                  "activation model plus weights, gradients and optimizer state)",
                    "alloc": "share of the layer's median forward time its page faults account for; "
                             "'mostly allocator' from 50%: the time is allocator cost, not compute, and "
                             "lands on whichever layer allocates next",
                    "roof_fwd": "where the layer's forward sits on the roofline (engine.roofline: achieved FLOP/s "
                                "against min(peak, intensity x bandwidth) of the measured ceilings): "
                                "compute-bound, memory-bound or overhead-bound (under 10 % of the roof), and "
                                "the % of that roof reached; shown once a run has ended or a session is open",
                    "roof_bwd": "the same for the layer's backward",
                    "j_sample": "energy per sample of the layer replayed alone after the run (forward + backward "
                                "in train mode), idle power subtracted; ± a 95 % interval over repeated "
                                "counter windows"}.get(COLUMNS[section][0])
        return None

    def data(self, index, role=Qt.DisplayRole):
        if not index.isValid():
            return None
        key, _title, fmt = COLUMNS[index.column()]
        v = self._rows[index.row()].get(key)
        if role == Qt.DisplayRole:
            return fmt(v) if v is not None else "–"
        if role == SORT_ROLE:
            if key in ("id", "kind"):
                return v or ""
            if key == "shape":
                return float(np.prod(v)) if v else -1.0
            if key == "fwd_spread":
                return -1.0 if v is None else float(v[1] - v[0])
            if key == "j_sample":
                return -1.0 if v is None else float(v[0])
            if key in ("roof_fwd", "roof_bwd"):
                return -1.0 if v is None or v[1] is None else float(v[1])
            return -1.0 if v is None else float(v)
        if role == Qt.TextAlignmentRole:
            left = COLUMNS[index.column()][0] in TEXT_COLUMNS
            return int((Qt.AlignLeft if left else Qt.AlignRight) | Qt.AlignVCenter)
        return None

    def set_rows(self, rows: list[dict]) -> None:
        if [r["id"] for r in rows] != [r["id"] for r in self._rows]:
            self.beginResetModel()
            self._rows = rows
            self.endResetModel()
        else:
            self._rows = rows
            if rows:
                self.dataChanged.emit(self.index(0, 0), self.index(len(rows) - 1, len(COLUMNS) - 1),
                                      [Qt.DisplayRole, SORT_ROLE])

    def row(self, i: int) -> dict:
        return self._rows[i]


class LayerTableView(MonitorView):
    title = "Layer table"
    max_hz = 2.0

    def __init__(self, parent=None):
        super().__init__(parent)
        self.model = LayerTableModel(self)
        self.proxy = QSortFilterProxyModel(self)
        self.proxy.setSourceModel(self.model)
        self.proxy.setSortRole(SORT_ROLE)
        self.table = QTableView()
        self.table.setModel(self.proxy)
        self.table.setSortingEnabled(True)
        self.table.sortByColumn(-1, Qt.AscendingOrder)
        self.table.setSelectionBehavior(QAbstractItemView.SelectRows)
        self.table.setAlternatingRowColors(True)
        self.table.verticalHeader().setVisible(False)
        self.table.verticalHeader().setDefaultSectionSize(22)
        # sized to the contents when the rows change, not on every update (measuring every cell
        # at each refresh costs tens of milliseconds on the GUI thread)
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.Interactive)
        self.table.horizontalHeader().setStretchLastSection(True)
        self.table.setMinimumSize(240, 120)
        self.table.installEventFilter(self)
        self.notice = notice_label("Per-layer facts appear when a run starts; times after its first profiled step. "
                                   "Ctrl+C copies rows as tab-separated text.")
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.setSpacing(2)
        lay.addWidget(self.notice)
        self.energy_note = notice_label("")
        self.energy_note.setVisible(False)
        lay.addWidget(self.energy_note)
        self.table.setColumnHidden(len(COLUMNS) - 1, True)  # J/sample: only when the run measured it
        lay.addWidget(self.table, 1)

    def clear(self) -> None:
        self.model.set_rows([])
        self.set_advice(None)
        self._roof = {}

    def set_roofline(self, data: dict | None) -> None:
        """Each layer's roofline class and % of roof (an ``engine.roofline`` dict; None clears),
        shown in the Fwd/Bwd roofline columns from the next refresh on (and now)."""
        self._roof = {}
        for lay in (data or {}).get("layers", []):
            self._roof[lay["id"]] = tuple((p["bound"], p["pct_of_roof"]) if p else None
                                          for p in (lay.get("fwd"), lay.get("bwd")))
        rows = [dict(self.model.row(i)) for i in range(self.model.rowCount())]
        if rows:
            self.model.set_rows(self._with_roof(rows))
            self.table.resizeColumnsToContents()

    def _with_roof(self, rows: list[dict]) -> list[dict]:
        roof = getattr(self, "_roof", {})
        for r in rows:
            r["roof_fwd"], r["roof_bwd"] = roof.get(r["id"], (None, None))
        return rows

    def set_advice(self, advice: str | None, fault_share: float | None = None) -> None:
        """The run's page-fault advice (``engine.run_summary``'s ``advice``), shown above the table
        while present; None puts the usual note back."""
        if not hasattr(self, "_note_text"):
            self._note_text = self.notice.text()
        if advice:
            share = f" ({fmt.fmt_pct(fault_share)} of the time in page faults)" if fault_share is not None else ""
            self.notice.setText(f"⚠ {advice}{share}")
            self.notice.setObjectName("warning")
        else:
            self.notice.setText(self._note_text)
            self.notice.setObjectName("notice")
        self.notice.style().unpolish(self.notice)
        self.notice.style().polish(self.notice)

    def update_snapshot(self, snap) -> None:
        le = engine.snapshot_layer_energy(snap)
        rows = self._with_roof(with_layer_energy(table_rows(snap), le))
        note = energy_note(le)
        self.energy_note.setText(note)
        self.energy_note.setVisible(bool(note))
        self.table.setColumnHidden(len(COLUMNS) - 1, not any(r["j_sample"] is not None for r in rows))
        fresh = [r["id"] for r in rows] != [self.model.row(i)["id"] for i in range(self.model.rowCount())]
        had_times = getattr(self, "_had_times", False)
        self.model.set_rows(rows)
        has_times = any(r["fwd_ms"] is not None for r in rows)
        if fresh or has_times != had_times:
            self.table.resizeColumnsToContents()
        self._had_times = has_times

    def select_layer(self, node_id: str) -> bool:
        """Select (and scroll to) the row of ``node_id``; clears the selection for an id not shown.
        True when the row is there."""
        for r in range(self.proxy.rowCount()):
            if self.proxy.data(self.proxy.index(r, 0)) == node_id:
                self.table.selectRow(r)
                self.table.scrollTo(self.proxy.index(r, 0))
                return True
        self.table.clearSelection()
        return False

    def selected_ids(self) -> list[str]:
        rows = sorted({i.row() for i in self.table.selectionModel().selectedIndexes()})
        return [self.proxy.data(self.proxy.index(r, 0)) for r in rows]

    def eventFilter(self, obj, event) -> bool:
        if obj is self.table and event.type() == event.Type.KeyPress and event.matches(QKeySequence.Copy):
            self.copy()
            return True
        return super().eventFilter(obj, event)

    def keyPressEvent(self, event) -> None:
        if event.matches(QKeySequence.Copy):
            self.copy()
            return
        super().keyPressEvent(event)

    def as_tsv(self, selected_only: bool = True) -> str:
        """The table as it is shown (sorted), tab-separated with a header line."""
        rows = sorted({i.row() for i in self.table.selectionModel().selectedIndexes()}) if selected_only else []
        if not rows:
            rows = list(range(self.proxy.rowCount()))
        lines = ["\t".join(t for _k, t, _f in COLUMNS)]
        for r in rows:
            lines.append("\t".join(str(self.proxy.data(self.proxy.index(r, c))) for c in range(len(COLUMNS))))
        return "\n".join(lines) + "\n"

    def copy(self) -> str:
        text = self.as_tsv()
        QGuiApplication.clipboard().setText(text)
        return text


def main(argv=None) -> int:
    from app.views.sample import preview

    return preview(LayerTableView, argv, size=(900, 420))


if __name__ == "__main__":
    sys.exit(main())
