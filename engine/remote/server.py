"""Serve a run's records to live viewers over TCP (``layerscope profile ... --serve HOST:PORT``).

``RecordServer`` is a sink like the session writer: the run calls ``server(record)``, which only
appends the record to a bounded buffer under a lock - O(1), no encoding, no socket work - so
a slow, stalled or hostile viewer can never slow the run. Each viewer has its own thread that
encodes and sends from the buffer at its own pace; a viewer that falls behind the buffer's
oldest record is sent ``missed`` (how many records it lost) and continues from there. The
session file on the server stays the record of the run.

Security: the server binds only where told (default 127.0.0.1); a viewer must send the random
token (``secrets.token_urlsafe``) in its first frame within ``HELLO_TIMEOUT_S`` seconds or it is
closed; the token is compared in constant time; frames from viewers are bounded to
``MAX_VIEWER_FRAME`` bytes and parsed as JSON only; at most ``max_viewers`` at once. Commands
(pause, resume, stop, feature node) are obeyed only with ``allow_control``.
"""
from __future__ import annotations

import collections
import hmac
import secrets
import select
import socket
import threading
import time
from engine.errors import LayerScopeError
from engine.records import RunEnded, RunInfo, TelemetryStatus
from engine.remote.wire import (HELLO_TIMEOUT_S, MAX_VIEWER_FRAME, PROTOCOL_VERSION, Closed, RemoteError,
                                encode_record, recv_frame, send_frame)

SEND_TIMEOUT_S = 30.0  # a viewer that accepts nothing for this long is dropped


class RecordServer:
    """A sink that streams every record it is given to connected viewers, in order.

    ``RecordServer(host="127.0.0.1", port=0, token=None, *, buffer=50_000, allow_control=False,
    control=None, max_viewers=8)``; ``port=0`` picks a free port (``.address`` after ``start()``).
    ``token`` defaults to 22 random URL-safe characters. ``control`` is the run (anything with
    ``pause()``, ``resume()``, ``stop()``, ``set_feature_node(node, first_channel)``), used only
    with ``allow_control``. ``buffer`` bounds how many records are kept for viewers that join late
    or reconnect; ``RunInfo`` and the latest ``TelemetryStatus`` are always kept.
    ``.stats()`` -> {"viewers", "sent", "missed", "refused"}. Raises LayerScopeError when the
    address cannot be bound.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, token: str | None = None, *,
                 buffer: int = 50_000, allow_control: bool = False, control=None, max_viewers: int = 8):
        self.host, self.port = host, port
        self.token = token or secrets.token_urlsafe(16)
        self.allow_control = allow_control
        self.control = control
        self.max_viewers = max_viewers
        self._buf: collections.deque = collections.deque(maxlen=buffer)
        self._first_seq = 0      # seq of self._buf[0]
        self._next_seq = 0
        self._run_info = None    # (seq, RunInfo)
        self._status = None      # (seq, TelemetryStatus)
        self._ended = False
        self._cond = threading.Condition()
        self._closing = threading.Event()
        self._sock: socket.socket | None = None
        self._threads: list[threading.Thread] = []
        self._viewers = 0
        self._done_viewers = 0   # connected viewers that were sent RunEnded
        self._served_end = 0     # viewers ever sent RunEnded
        self._counts = {"sent": 0, "missed": 0, "refused": 0}

    # -- the sink (run thread) -------------------------------------------------------------------
    def __call__(self, record) -> None:
        with self._cond:
            seq = self._next_seq
            self._next_seq += 1
            if len(self._buf) == self._buf.maxlen:
                self._first_seq += 1
            self._buf.append(record)
            if isinstance(record, RunInfo):
                self._run_info = (seq, record)
            elif isinstance(record, TelemetryStatus):
                self._status = (seq, record)
            elif isinstance(record, RunEnded):
                self._ended = True
            self._cond.notify_all()

    # -- lifecycle ---------------------------------------------------------------------------------
    def start(self) -> "RecordServer":
        try:
            infos = socket.getaddrinfo(self.host, self.port, type=socket.SOCK_STREAM)
            family, _, _, _, addr = infos[0]
            sock = socket.socket(family, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(addr)
            sock.listen(16)
        except OSError as e:
            raise LayerScopeError(f"cannot serve on {self.host}:{self.port}: {e.strerror or e}") from None
        sock.settimeout(0.2)
        self._sock = sock
        self.port = sock.getsockname()[1]
        t = threading.Thread(target=self._accept_loop, name="layerscope-serve", daemon=True)
        t.start()
        self._threads.append(t)
        return self

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def stats(self) -> dict:
        with self._cond:
            return {"viewers": self._viewers, **self._counts}

    def wait_viewers(self, timeout: float) -> bool:
        """After the run ended: wait (at most ``timeout`` s) until every connected viewer has been
        sent ``RunEnded`` and, when none has been yet, for one to connect and receive it (so a
        viewer started just after a short run still sees it). True when no viewer is left behind."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._viewers > self._done_viewers or self._served_end == 0:
                left = deadline - time.monotonic()
                if left <= 0:
                    return self._viewers <= self._done_viewers
                self._cond.wait(min(left, 0.2))
        return True

    def close(self) -> None:
        """Stop accepting, close every connection, join the threads (quick)."""
        self._closing.set()
        with self._cond:
            self._cond.notify_all()
        for t in list(self._threads):
            t.join(2.0)
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.close()

    # -- connections -------------------------------------------------------------------------------
    def _accept_loop(self) -> None:
        while not self._closing.is_set():
            try:
                conn, _ = self._sock.accept()
            except (socket.timeout, BlockingIOError):
                continue
            except OSError:
                return
            with self._cond:
                full = self._viewers >= self.max_viewers
                if not full:
                    self._viewers += 1
            if full:
                self._refuse(conn, f"too many viewers (at most {self.max_viewers})")
                continue
            t = threading.Thread(target=self._serve, args=(conn,), name="layerscope-viewer", daemon=True)
            self._threads = [x for x in self._threads if x.is_alive()] + [t]
            t.start()

    def _refuse(self, conn: socket.socket, message: str) -> None:
        with self._cond:
            self._counts["refused"] += 1
        try:
            conn.settimeout(1.0)
            send_frame(conn, {"type": "refused", "message": message})
        except OSError:
            pass
        finally:
            conn.close()

    def _hello(self, conn: socket.socket) -> int | None:
        """The viewer's first frame: its ``since`` when the token is right, else None (refused)."""
        conn.settimeout(HELLO_TIMEOUT_S)
        try:
            hello = recv_frame(conn, MAX_VIEWER_FRAME)
        except (OSError, RemoteError) as e:  # timeout (half-open), garbage, huge length, closed
            self._refuse(conn, f"no valid hello: {e}")
            return None
        token = hello.get("token")
        if hello.get("type") != "hello" or not isinstance(token, str):
            self._refuse(conn, "the first frame must be a hello with the token")
            return None
        if not hmac.compare_digest(token.encode("utf-8", "replace"), self.token.encode("utf-8")):
            self._refuse(conn, "wrong token")
            return None
        since = hello.get("since", 0)
        return since if isinstance(since, int) and since >= 0 else 0

    def _serve(self, conn: socket.socket) -> None:
        got_end = False
        try:
            since = self._hello(conn)
            if since is None:
                return
            conn.settimeout(SEND_TIMEOUT_S)
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._cond:
                next_seq = self._next_seq
            send_frame(conn, {"type": "welcome", "version": PROTOCOL_VERSION, "control": self.allow_control,
                              "next_seq": next_seq})
            got_end = self._stream(conn, since)
            if got_end:  # half-close, then let the viewer read everything before the socket goes
                conn.shutdown(socket.SHUT_WR)
                conn.settimeout(1.0)
                while conn.recv(4096):
                    pass
        except (OSError, RemoteError):
            pass  # the viewer went away or misbehaved: its business, not the run's
        finally:
            conn.close()
            with self._cond:
                self._viewers -= 1
                if got_end:
                    self._done_viewers -= 1
                self._cond.notify_all()

    def _batch(self, cursor: int, sent_head: set) -> tuple[list, int, int, int]:
        """Records from ``cursor`` (waiting a little for new ones): (items, missed, the seq the
        stream resumes at after a gap, new cursor).

        A viewer behind the buffer's oldest record skips to it (``missed`` records lost); the run
        info and the telemetry status it has not had still come first."""
        with self._cond:
            if cursor >= self._next_seq and not self._closing.is_set():
                self._cond.wait(0.2)
            items = []
            missed = 0
            if cursor < self._first_seq:
                for head in (self._run_info, self._status):
                    if head is not None and cursor <= head[0] < self._first_seq and head[0] not in sent_head:
                        items.append(head)
                        sent_head.add(head[0])
                missed = self._first_seq - cursor - len(items)
                cursor = self._first_seq
            end = min(self._next_seq, cursor + 256)
            items.extend((s, self._buf[s - self._first_seq]) for s in range(cursor, end))
            if missed:
                self._counts["missed"] += missed
            return items, missed, cursor, end

    def _stream(self, conn: socket.socket, cursor: int) -> bool:
        """Send records from ``cursor`` until RunEnded (True) or the server closes (False)."""
        sent_head: set = set()
        while not self._closing.is_set():
            items, missed, resume, new_cursor = self._batch(cursor, sent_head)
            if missed > 0:
                send_frame(conn, {"type": "missed", "count": missed, "next_seq": resume})
            for seq, rec in items:
                send_frame(conn, encode_record(seq, rec))
                with self._cond:
                    self._counts["sent"] += 1
                if isinstance(rec, RunEnded):
                    with self._cond:
                        self._done_viewers += 1
                        self._served_end += 1
                        self._cond.notify_all()
                    return True
            cursor = new_cursor
            self._drain_commands(conn, linger=0.0)
        return False

    def _drain_commands(self, conn: socket.socket, linger: float) -> None:
        """Read any command frames the viewer sent (never blocks the stream for long)."""
        while True:
            ready, _, _ = select.select([conn], [], [], linger)
            if not ready:
                return
            old = conn.gettimeout()
            conn.settimeout(2.0)  # a half-sent frame may not stall this viewer's stream for longer
            try:
                frame = recv_frame(conn, MAX_VIEWER_FRAME)
            finally:
                conn.settimeout(old)
            self._command(conn, frame)

    def _command(self, conn: socket.socket, frame: dict) -> None:
        name = frame.get("command")
        if frame.get("type") != "command" or name not in ("pause", "resume", "stop", "feature"):
            send_frame(conn, {"type": "ack", "command": str(name)[:40], "ok": False,
                              "message": "unknown frame: expected a command pause|resume|stop|feature"})
            return
        if not self.allow_control or self.control is None:
            send_frame(conn, {"type": "ack", "command": name, "ok": False,
                              "message": "this run was served without --allow-control: view only"})
            return
        message = ""
        try:
            if name == "feature":
                node, first = frame.get("node"), frame.get("first_channel", 0)
                if not (node is None or isinstance(node, str)) or not isinstance(first, int):
                    raise LayerScopeError("feature: node must be a string and first_channel an integer")
                self.control.set_feature_node(node, first)
            else:
                getattr(self.control, name)()
            ok = True
        except LayerScopeError as e:
            ok, message = False, str(e)
        send_frame(conn, {"type": "ack", "command": name, "ok": ok, "message": message})


def start_server(address: str, *, allow_control: bool = False, token: str | None = None) -> RecordServer:
    """A started RecordServer at ``address`` (HOST:PORT; LayerScopeError when it is malformed or
    cannot be bound). Give it to the run as a sink and set ``server.control = run`` for commands."""
    from engine.remote.wire import parse_address

    host, port = parse_address(address)
    return RecordServer(host, port, token, allow_control=allow_control).start()
