"""The property panel: a form generated from the selected node's registry schema.

int -> spin box with the schema's bounds, float -> number box, bool -> check box,
choice -> combo box, int_or_choice -> combo (a number or one of the choices) plus a spin
box, int_pair -> one spin box, or two for [h, w]. Every change goes through the model (one
undo step, consecutive changes of one field merged) and is revalidated at once. For the net
input ('input' selected) the form edits channels, height, width and classes.

Run alone: ``python -m app.editor.properties [preset] --select conv1``.
"""
from __future__ import annotations

from PySide6.QtCore import QSize, Qt, Signal
from PySide6.QtGui import QFont
from PySide6.QtWidgets import (QAbstractSpinBox, QCheckBox, QComboBox, QDoubleSpinBox, QFormLayout, QFrame,
                               QHBoxLayout, QLabel, QLineEdit, QScrollArea, QSpinBox, QToolButton, QVBoxLayout,
                               QWidget)

import engine
from engine import INPUT_ID, fmt

from . import theme
from .model import EditorModel
from .validation import Validation, opaque_op

_INT_MAX = 2**31 - 1
_NUMBER = "number"


def _bound(v, default):
    return int(v) if v is not None else default


class _FloatBox(QDoubleSpinBox):
    """Shows floats the way people write them (1e-05, 0.75), not fixed decimals."""

    def textFromValue(self, value: float) -> str:
        return f"{value:g}"

    def valueFromText(self, text: str) -> float:
        try:
            return float(text)
        except ValueError:
            return self.value()

    def validate(self, text, pos):
        from PySide6.QtGui import QValidator

        t = text.strip()
        if t in ("", "-", ".", "-.") or t.lower().endswith(("e", "e-", "e+")):
            return QValidator.Intermediate, text, pos
        try:
            v = float(t)
        except ValueError:
            return QValidator.Invalid, text, pos
        ok = self.minimum() <= v <= self.maximum()
        return (QValidator.Acceptable if ok else QValidator.Intermediate), text, pos


class _Editor(QWidget):
    """One parameter's widget(s): ``value()`` / ``set_value()`` and ``edited`` when the person changes it."""

    edited = Signal()

    def __init__(self, param, parent=None):
        super().__init__(parent)
        self.param = param
        self._lay = QHBoxLayout(self)
        self._lay.setContentsMargins(0, 0, 0, 0)
        self._lay.setSpacing(4)
        self.setToolTip(param.help)

    def _spin(self, lo, hi) -> QSpinBox:
        s = QSpinBox(self)
        s.setRange(lo, hi)
        s.setKeyboardTracking(False)
        s.setAccelerated(True)
        s.setToolTip(self.param.help)
        s.setMinimumWidth(56)
        s.valueChanged.connect(lambda _=None: self.edited.emit())
        return s


class _IntEditor(_Editor):
    def __init__(self, param, parent=None):
        super().__init__(param, parent)
        self.spin = self._spin(_bound(param.min, -_INT_MAX), _bound(param.max, _INT_MAX))
        self._lay.addWidget(self.spin)

    def value(self):
        return self.spin.value()

    def set_value(self, v) -> None:
        if isinstance(v, int) and not isinstance(v, bool):
            self.spin.setValue(v)


class _FloatEditor(_Editor):
    def __init__(self, param, parent=None):
        super().__init__(param, parent)
        self.spin = _FloatBox(self)
        self.spin.setDecimals(10)
        self.spin.setRange(param.min if param.min is not None else -1e12, param.max if param.max is not None else 1e12)
        self.spin.setStepType(QAbstractSpinBox.AdaptiveDecimalStepType)
        self.spin.setKeyboardTracking(False)
        self.spin.setToolTip(param.help)
        self.spin.setMinimumWidth(56)
        self.spin.valueChanged.connect(lambda _=None: self.edited.emit())
        self._lay.addWidget(self.spin)

    def value(self):
        return float(self.spin.value())

    def set_value(self, v) -> None:
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            self.spin.setValue(float(v))


class _BoolEditor(_Editor):
    def __init__(self, param, parent=None):
        super().__init__(param, parent)
        self.box = QCheckBox(self)
        self.box.setToolTip(param.help)
        self.box.toggled.connect(lambda _=None: self.edited.emit())
        self._lay.addWidget(self.box)
        self._lay.addStretch(1)

    def value(self):
        return self.box.isChecked()

    def set_value(self, v) -> None:
        self.box.setChecked(bool(v))


class _ChoiceEditor(_Editor):
    def __init__(self, param, parent=None):
        super().__init__(param, parent)
        self.combo = QComboBox(self)
        self.combo.addItems([str(c) for c in param.choices])
        self.combo.setToolTip(param.help)
        self.combo.currentIndexChanged.connect(lambda _=None: self.edited.emit())
        self._lay.addWidget(self.combo, 1)

    def value(self):
        return self.param.choices[self.combo.currentIndex()]

    def set_value(self, v) -> None:
        if v in self.param.choices:
            self.combo.setCurrentIndex(list(self.param.choices).index(v))


class _IntOrChoiceEditor(_Editor):
    def __init__(self, param, parent=None):
        super().__init__(param, parent)
        self.combo = QComboBox(self)
        self.combo.addItems([_NUMBER, *[str(c) for c in param.choices]])
        self.combo.setToolTip(param.help)
        self.spin = self._spin(_bound(param.min, 0), _bound(param.max, _INT_MAX))
        self.combo.currentIndexChanged.connect(self._on_combo)
        self._lay.addWidget(self.combo)
        self._lay.addWidget(self.spin, 1)

    def _on_combo(self, _=None) -> None:
        self.spin.setEnabled(self.combo.currentIndex() == 0)
        self.edited.emit()

    def value(self):
        i = self.combo.currentIndex()
        return self.spin.value() if i == 0 else self.param.choices[i - 1]

    def set_value(self, v) -> None:
        if isinstance(v, str) and v in self.param.choices:
            self.combo.setCurrentIndex(1 + list(self.param.choices).index(v))
        elif isinstance(v, int) and not isinstance(v, bool):
            self.combo.setCurrentIndex(0)
            self.spin.setValue(v)
        self.spin.setEnabled(self.combo.currentIndex() == 0)


class _IntPairEditor(_Editor):
    def __init__(self, param, parent=None):
        super().__init__(param, parent)
        lo, hi = _bound(param.min, 0), _bound(param.max, _INT_MAX)
        self.h = self._spin(lo, hi)
        self.w = self._spin(lo, hi)
        self.times = QLabel("x", self)
        self.split = QToolButton(self)
        self.split.setText("h,w")
        self.split.setCheckable(True)
        self.split.setToolTip("separate height and width")
        self.split.toggled.connect(self._on_split)
        self._lay.addWidget(self.h, 1)
        self._lay.addWidget(self.times)
        self._lay.addWidget(self.w, 1)
        self._lay.addWidget(self.split)
        self._show_split(False)

    def _show_split(self, on: bool) -> None:
        self.w.setVisible(on)
        self.times.setVisible(on)

    def _on_split(self, on: bool) -> None:
        self._show_split(on)
        if on:
            self.w.blockSignals(True)
            self.w.setValue(self.h.value())
            self.w.blockSignals(False)
        self.edited.emit()

    def value(self):
        return [self.h.value(), self.w.value()] if self.split.isChecked() else self.h.value()

    def set_value(self, v) -> None:
        if isinstance(v, list) and len(v) == 2:
            self.split.setChecked(True)
            self.h.setValue(int(v[0]))
            self.w.setValue(int(v[1]))
        elif isinstance(v, int) and not isinstance(v, bool):
            self.split.setChecked(False)
            self.h.setValue(v)
        self._show_split(self.split.isChecked())


_EDITORS = {"int": _IntEditor, "float": _FloatEditor, "bool": _BoolEditor, "choice": _ChoiceEditor,
            "int_or_choice": _IntOrChoiceEditor, "int_pair": _IntPairEditor}


class PropertyPanel(QWidget):
    """Edits the model's selected node (or the net input) through a schema-generated form."""

    def __init__(self, model: EditorModel, parent: QWidget | None = None):
        super().__init__(parent)
        self.model = model
        self._node_id = None
        self._kind = None
        self.editors: dict[str, _Editor] = {}
        self._resets: dict[str, QToolButton] = {}
        self.id_edit: QLineEdit | None = None

        self.icon = QLabel(self)
        self.icon.setFixedSize(24, 24)
        self.title = QLabel(self)
        f = QFont(self.font())
        f.setBold(True)
        f.setPointSizeF(f.pointSizeF() * 1.15)
        self.title.setFont(f)
        self.kind_label = QLabel(self)
        self.kind_label.setStyleSheet("color: palette(placeholder-text);")
        self.kind_label.setWordWrap(True)
        head = QHBoxLayout()
        head.setSpacing(8)
        head.addWidget(self.icon)
        head.addWidget(self.title, 1)
        self.help = QLabel(self)
        self.help.setWordWrap(True)
        self.help.setStyleSheet("color: palette(placeholder-text);")
        self.form_host = QWidget(self)
        self.form = QFormLayout(self.form_host)
        self.form.setContentsMargins(0, 4, 0, 4)
        self.form.setLabelAlignment(Qt.AlignRight | Qt.AlignVCenter)
        self.form.setFieldGrowthPolicy(QFormLayout.AllNonFixedFieldsGrow)
        # in a narrow dock a field goes under its label instead of being cut off at the right edge
        self.form.setRowWrapPolicy(QFormLayout.WrapLongRows)
        self.facts = QLabel(self)
        self.facts.setWordWrap(True)
        self.facts.setTextFormat(Qt.RichText)
        self.problems = QLabel(self)
        self.problems.setWordWrap(True)
        self.problems.setStyleSheet(f"color: {theme.ERROR_COLOR};")
        self.id_error = QLabel(self)
        self.id_error.setStyleSheet(f"color: {theme.ERROR_COLOR};")
        self.id_error.setWordWrap(True)
        self.id_error.hide()
        self.empty = QLabel("Select a layer on the canvas to edit its parameters.", self)
        self.empty.setWordWrap(True)
        self.empty.setAlignment(Qt.AlignCenter)
        self.empty.setStyleSheet("color: palette(placeholder-text);")
        # with nothing selected the panel edits the net itself: its name names the window title,
        # the saved file and the checkpoints (an unnamed net is "untitled")
        self.net_box = QWidget(self)
        net_form = QFormLayout(self.net_box)
        net_form.setContentsMargins(0, 0, 0, 8)
        net_form.setRowWrapPolicy(QFormLayout.WrapLongRows)
        self.name_edit = QLineEdit(self.net_box)
        self.name_edit.setPlaceholderText("untitled")
        self.name_edit.setToolTip("the net's name: saved in the net file ('name'), used for the window title, "
                                  "the file name offered on save and the checkpoints of its runs")
        self.name_edit.editingFinished.connect(lambda: self.model.set_net_name(self.name_edit.text()))
        net_title = QLabel("Net", self.net_box)
        net_title.setFont(f)
        net_form.addRow(net_title)
        net_form.addRow("name", self.name_edit)

        inner = QWidget(self)
        col = QVBoxLayout(inner)
        col.setContentsMargins(10, 8, 10, 8)
        col.setSpacing(6)
        col.addWidget(self.net_box)
        col.addLayout(head)
        col.addWidget(self.kind_label)
        col.addWidget(self.help)
        line = QFrame(inner)
        line.setFrameShape(QFrame.HLine)
        line.setFrameShadow(QFrame.Sunken)
        col.addWidget(line)
        col.addWidget(self.form_host)
        col.addWidget(self.id_error)
        col.addWidget(self.facts)
        col.addWidget(self.problems)
        col.addWidget(self.empty)
        col.addStretch(1)
        scroll = QScrollArea(self)
        scroll.setWidgetResizable(True)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarAlwaysOff)
        scroll.setFrameShape(QFrame.NoFrame)
        scroll.setWidget(inner)
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        outer.addWidget(scroll)

        model.selection_changed.connect(self._on_selection)
        model.spec_changed.connect(self._on_spec_changed)
        model.validated.connect(self._on_validated)
        self._on_selection(model.selected())

    # -- building ----------------------------------------------------------------------------------
    def node_id(self) -> str:
        """The node (or 'input') the form edits, '' when none."""
        return self._node_id or ""

    def _clear_form(self) -> None:
        # deleteLater: a rename rebuilds the form from inside the id editor's own signal
        while self.form.rowCount():
            row = self.form.takeRow(0)
            for item in (row.labelItem, row.fieldItem):
                if item is not None and item.widget() is not None:
                    item.widget().hide()
                    item.widget().deleteLater()
        self.editors.clear()
        self._resets.clear()
        self.id_edit = None

    def _on_selection(self, node_id: str) -> None:
        self._node_id = node_id or None
        self._kind = None
        self._clear_form()
        self.id_error.hide()
        node = self.model.node(node_id) if node_id and node_id != INPUT_ID else None
        has = node_id == INPUT_ID or node is not None
        for w in (self.icon, self.title, self.kind_label, self.help, self.form_host, self.facts, self.problems):
            w.setVisible(has)
        self.empty.setVisible(not has)
        self.net_box.setVisible(not has)
        if not has:
            self.name_edit.setText(self.model.spec_view().name)
        if node_id == INPUT_ID:
            self._build_input()
        elif node is not None:
            self._build_node(node)
        if has:
            self._on_spec_changed()
            self._on_validated(self.model.validation())

    def _build_input(self) -> None:
        self.icon.setPixmap(theme.icon("input").pixmap(24, 24))
        self.title.setText("Input")
        self.kind_label.setText("net input")
        self.help.setText("One sample is channels x height x width, labelled with one of the classes.")
        tips = {"channels": "colour channels per sample (1 grey, 3 RGB)", "height": "image height in pixels",
                "width": "image width in pixels", "classes": "number of classes the net scores"}
        for name, (lo, hi) in engine.INPUT_FIELDS.items():
            ed = _IntEditor(engine.Param(name, "int", lo, tips[name], min=lo, max=hi), self.form_host)
            ed.edited.connect(lambda n=name, e=ed: self.model.set_input_spec(**{n: e.value()}))
            self.editors[name] = ed
            self.form.addRow(name, ed)

    def _build_node(self, node) -> None:
        kind = engine.get_kind(node.kind)
        self._kind = node.kind
        family = kind.family if kind else ""
        self.icon.setPixmap(theme.icon(node.kind, family).pixmap(24, 24))
        self.title.setText(node.id)
        self.kind_label.setText(f"{node.kind}  ·  {family}" if kind else node.kind)
        self.help.setText(kind.help if kind else f"unknown layer kind '{node.kind}'")
        self.id_edit = QLineEdit(node.id, self.form_host)
        self.id_edit.setToolTip("the node's id: also its module name and how other nodes refer to it")
        self.id_edit.editingFinished.connect(self._on_id_edited)
        self.form.addRow("id", self.id_edit)
        op = opaque_op(node)
        if op is not None:  # an imported op with no layer kind: shown, never edited
            self._kind = node.kind
            self.kind_label.setText(f"{op}  ·  imported (read-only)")
            self.help.setText("An op of the imported model that no LayerScope layer kind matches: it runs "
                              "from the model's file, so it cannot be edited here.")
            self.id_edit.setReadOnly(True)
            self.op_label = QLabel(op, self.form_host)
            self.op_label.setTextInteractionFlags(Qt.TextSelectableByMouse)
            self.form.addRow("op", self.op_label)
            return
        for p in kind.params if kind else ():
            ed = _EDITORS[p.type](p, self.form_host)
            ed.edited.connect(lambda n=p.name, e=ed: self._on_param_edited(n, e))
            reset = QToolButton(self.form_host)
            reset.setText("↺")
            reset.setAutoRaise(True)
            reset.setToolTip(f"back to the default ({theme.value_text(p.default)})" if not p.required else "")
            reset.clicked.connect(lambda _=False, n=p.name: self.model.reset_param(self._node_id, n))
            keep = reset.sizePolicy()
            keep.setRetainSizeWhenHidden(True)  # editors stay aligned whether or not a row can reset
            reset.setSizePolicy(keep)
            row = QWidget(self.form_host)
            lay = QHBoxLayout(row)
            lay.setContentsMargins(0, 0, 0, 0)
            lay.setSpacing(2)
            lay.addWidget(ed, 1)
            lay.addWidget(reset)
            label = QLabel(p.name.replace("_", " "), self.form_host)
            label.setToolTip(p.help)
            self.form.addRow(label, row)
            self.editors[p.name] = ed
            self._resets[p.name] = reset

    # -- syncing -----------------------------------------------------------------------------------
    def _on_spec_changed(self) -> None:
        nid = self._node_id
        if nid is None:
            if not self.name_edit.hasFocus():
                self.name_edit.setText(self.model.spec_view().name)
            return
        if nid == INPUT_ID:
            inp = self.model.spec_view().input
            for name, ed in self.editors.items():
                self._set_quiet(ed, getattr(inp, name))
            return
        node = self.model.node(nid)
        if node is None:
            self._on_selection("")
            return
        if node.kind != self._kind:
            self._on_selection(nid)
            return
        kind = engine.get_kind(node.kind)
        values = kind.resolved(node.params) if kind else dict(node.params)
        for name, ed in self.editors.items():
            if name in values:
                self._set_quiet(ed, values[name])
            self._resets[name].setVisible(name in node.params and kind.param(name).default != node.params[name])

    def _set_quiet(self, ed: _Editor, value) -> None:
        widgets = [ed] + ed.findChildren(QWidget)
        for w in widgets:
            w.blockSignals(True)
        try:
            ed.set_value(value)
        finally:
            for w in widgets:
                w.blockSignals(False)

    def _on_validated(self, v: Validation) -> None:
        nid = self._node_id
        if nid is None:
            return
        msgs = v.node_problems(nid)
        self.problems.setText("\n".join(msgs))
        self.problems.setVisible(bool(msgs))
        if nid == INPUT_ID:
            s = v.shapes.get(INPUT_ID)
            self.facts.setText(f"<span style='color:gray'>sample</span> {theme.shape_text(s)}" if s else "")
            return
        layer = v.layers.get(nid)
        if layer is None:
            self.facts.setText("<span style='color:gray'>output shape unknown until the problems above"
                               " (or in what feeds it) are fixed</span>" if msgs or not v.ok else "")
            return
        ins = ", ".join(theme.shape_text(s) for s in layer.in_shapes)
        self.facts.setText(
            "<table cellspacing='2'>"
            f"<tr><td style='color:gray'>input&nbsp;</td><td>{ins}</td></tr>"
            f"<tr><td style='color:gray'>output&nbsp;</td><td>{theme.shape_text(layer.out_shape)}</td></tr>"
            f"<tr><td style='color:gray'>params&nbsp;</td><td>{fmt.fmt_count(layer.params)}</td></tr>"
            f"<tr><td style='color:gray'>FLOPs&nbsp;</td><td>{fmt.fmt_count(layer.flops)} per sample</td></tr>"
            "</table>")

    # -- edits -------------------------------------------------------------------------------------
    def _on_param_edited(self, name: str, ed: _Editor) -> None:
        if self._node_id and self._node_id != INPUT_ID:
            self.model.set_param(self._node_id, name, ed.value())

    def _on_id_edited(self) -> None:
        if self.id_edit is None or not self._node_id:
            return
        new = self.id_edit.text().strip()
        why = self.model.rename_node(self._node_id, new)
        if why:
            self.id_error.setText(why)
            self.id_error.show()
            self.id_edit.setText(self._node_id)
        else:
            self.id_error.hide()
            self._node_id = self.model.selected() or new
            self.title.setText(self._node_id)

    def sizeHint(self) -> QSize:
        return QSize(300, 480)


def main(argv=None) -> int:
    from ._preview import preview

    return preview(lambda model: PropertyPanel(model), argv, size=(320, 520), select="conv1")


if __name__ == "__main__":
    raise SystemExit(main())
