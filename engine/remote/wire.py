"""The wire format of a served run: length-prefixed JSON frames carrying the run's own records.

A frame is a 4-byte unsigned big-endian length followed by that many bytes of UTF-8 JSON holding
one object with a ``"type"``. What travels:

viewer -> server
    ``{"type": "hello", "version": 1, "token": str, "since": int}``: the first frame, within
    ``HELLO_TIMEOUT_S``; ``since`` is the sequence number of the first record wanted (0: all).
    ``{"type": "command", "command": "pause" | "resume" | "stop" | "feature", "node": str|None,
    "first_channel": int}``: honoured only when the server was started with ``allow_control``.
server -> viewer
    ``{"type": "welcome", "version": 1, "control": bool, "next_seq": int}``, then
    ``{"type": "record", "seq": int, "kind": "StepRecord", "data": {...}}`` in order,
    ``{"type": "missed", "count": int, "next_seq": int}`` when the viewer fell behind the server's
    bounded buffer (the oldest records were dropped for it; the run never waits for a viewer),
    ``{"type": "refused", "message": str}`` / ``{"type": "error", "message": str}`` before closing,
    and ``{"type": "ack", "command": str, "ok": bool, "message": str}`` for commands.

Records are the dataclasses of ``engine.records`` (what a session holds), as ``asdict`` with
``bytes`` as base64 and tuples as lists. Nothing received is evaluated: frames are parsed with
``json`` only, sizes are bounded before reading, and unknown record kinds or fields are refused.
"""
from __future__ import annotations

import base64
import dataclasses
import json
import socket
import struct

from engine import records as R
from engine.errors import LayerScopeError

PROTOCOL_VERSION = 1
HELLO_TIMEOUT_S = 5.0
MAX_VIEWER_FRAME = 64 * 1024          # hello and commands are tiny; anything longer is hostile
MAX_SERVER_FRAME = 256 * 1024 * 1024  # a feature map of 32 channels at 1024 x 1024, base64, fits
_HEADER = struct.Struct(">I")

RECORD_TYPES = {cls.__name__: cls for cls in (
    R.RunInfo, R.StepRecord, R.LayerTimes, R.TelemetryBatch, R.FeatureMap, R.EvalRecord, R.LogRecord,
    R.StateChanged, R.RunEnded, R.TelemetryStatus, R.CommTimes)}


class RemoteError(LayerScopeError):
    """A connection or protocol problem, one line (bad token, garbage, a closed connection)."""


class Closed(RemoteError):
    """The other end closed the connection (cleanly or not)."""


# -- frames ---------------------------------------------------------------------------------------
def send_frame(sock: socket.socket, obj: dict) -> None:
    """Write one frame (blocking; the socket's timeout applies)."""
    payload = json.dumps(obj, separators=(",", ":"), allow_nan=True).encode("utf-8")
    sock.sendall(_HEADER.pack(len(payload)) + payload)


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(min(n - len(buf), 1 << 20))
        if not chunk:
            raise Closed("the connection was closed")
        buf += chunk
    return bytes(buf)


def recv_frame(sock: socket.socket, max_len: int) -> dict:
    """Read one frame: RemoteError for a length over ``max_len``, bytes that are not UTF-8 JSON, or
    JSON that is not an object with a string ``type``; Closed when the peer went away;
    ``socket.timeout`` when it stalls past the socket's timeout."""
    (n,) = _HEADER.unpack(_recv_exact(sock, _HEADER.size))
    if n > max_len:
        raise RemoteError(f"a frame of {n} bytes is over the limit of {max_len}")
    raw = _recv_exact(sock, n)
    try:
        obj = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise RemoteError("a frame is not UTF-8 JSON") from None
    if not isinstance(obj, dict) or not isinstance(obj.get("type"), str):
        raise RemoteError("a frame is not a JSON object with a 'type'")
    return obj


# -- records ----------------------------------------------------------------------------------------
def _plain(v):
    if isinstance(v, (bytes, bytearray, memoryview)):
        return {"$b64": base64.b64encode(bytes(v)).decode("ascii")}
    if isinstance(v, dict):
        return {str(k): _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if dataclasses.is_dataclass(v):
        return {f.name: _plain(getattr(v, f.name)) for f in dataclasses.fields(v)}
    return v


def encode_record(seq: int, rec) -> dict:
    """The ``record`` frame of ``rec`` (one of ``RECORD_TYPES``)."""
    kind = next(c.__name__ for c in type(rec).__mro__ if c.__name__ in RECORD_TYPES)  # a subclass's record type
    return {"type": "record", "seq": seq, "kind": kind, "data": _plain(rec)}


def _unplain(v):
    if isinstance(v, dict):
        if set(v) == {"$b64"} and isinstance(v["$b64"], str):
            try:
                return base64.b64decode(v["$b64"], validate=True)
            except ValueError:
                raise RemoteError("a record holds bad base64 data") from None
        return {k: _unplain(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_unplain(x) for x in v]
    return v


def _build(cls, data):
    if not isinstance(data, dict):
        raise RemoteError(f"a {cls.__name__} record is not an object")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = set(data) - set(fields)
    if unknown:
        raise RemoteError(f"a {cls.__name__} record has unknown fields: {', '.join(sorted(unknown))}")
    kw = dict(data)
    if cls is R.RunInfo:
        kw["layers"] = [_build(R.LayerRow, d) for d in kw.get("layers") or []]
    elif cls is R.LayerRow:
        kw["out_shape"] = tuple(kw.get("out_shape") or ())
    elif cls is R.TelemetryBatch:
        kw["samples"] = [_build(R.TelemetrySample, d) for d in kw.get("samples") or []]
    elif cls is R.FeatureMap:
        kw["shape"] = tuple(kw.get("shape") or ())
        if not isinstance(kw.get("data"), bytes):
            raise RemoteError("a FeatureMap record carries no data")
    try:
        return cls(**kw)
    except TypeError as e:
        raise RemoteError(f"a {cls.__name__} record is incomplete: {e}") from None


def decode_record(frame: dict):
    """``(seq, record)`` from a ``record`` frame; RemoteError for a kind or field that is unknown."""
    kind, seq = frame.get("kind"), frame.get("seq")
    cls = RECORD_TYPES.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise RemoteError(f"unknown record kind {kind!r}")
    if not isinstance(seq, int) or seq < 0:
        raise RemoteError("a record frame has no sequence number")
    return seq, _build(cls, _unplain(frame.get("data")))


def parse_address(text: str, default_host: str = "127.0.0.1") -> tuple[str, int]:
    """``HOST:PORT`` (or ``PORT``, or ``[v6]:PORT``) -> (host, port); LayerScopeError otherwise."""
    text = (text or "").strip()
    host, sep, port = text.rpartition(":")
    if not sep:
        host, port = default_host, text
    host = host.strip("[]") or default_host
    try:
        p = int(port)
    except ValueError:
        raise LayerScopeError(f"address {text!r}: give HOST:PORT, e.g. 127.0.0.1:7788") from None
    if not 0 <= p <= 65535:
        raise LayerScopeError(f"address {text!r}: port {p} is outside 0..65535")
    return host, p
