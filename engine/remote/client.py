"""Watch a served run from another machine: ``RemoteRun`` looks like a local ``Run`` to its user.

``RemoteRun(address, token, sinks)`` connects to a ``layerscope profile ... --serve`` process and
hands every record it receives, in order, to its sinks (a ``LiveFeed`` for the app, a
``SessionWriter`` for a local copy, the CLI's progress). ``run()`` blocks until the run ends (its
``RunEnded`` arrives) and returns a ``RunResult`` like ``Run.run()``; it never raises for a
connection problem: a refused token, a server that is not there or a connection lost for longer
than ``reconnect_s`` end it as ``failed`` with a one-line message. A dropped connection is
reopened with ``since`` = the next sequence number wanted, so the viewer resumes where it left;
records the server no longer holds are counted in ``missed``.

``pause()``, ``resume()``, ``stop()`` and ``set_feature_node()`` are sent to the server when it
was started with ``--allow-control`` (``control`` is True once connected) and raise
LayerScopeError otherwise; ``disconnect()`` leaves the run going on the server.
"""
from __future__ import annotations

import socket
import threading
import time

from engine.errors import LayerScopeError
from engine.records import RunEnded
from engine.remote.wire import (MAX_SERVER_FRAME, PROTOCOL_VERSION, Closed, RemoteError, decode_record,
                                parse_address, recv_frame, send_frame)


class RemoteRun:
    """A served run seen from a viewer; ``run()`` feeds ``sinks`` until the run ends.

    A ``failed`` result that is the viewer's, not the run's, says so in ``extra["connection"]``:
    "refused" (wrong token, too many viewers), "unreachable" (never connected), "lost" (the
    connection dropped for longer than ``reconnect_s``) or "protocol" (not a LayerScope server)."""

    def __init__(self, address: str, token: str, sinks=(), *, reconnect_s: float = 30.0,
                 connect_timeout: float = 5.0):
        self.host, self.port = parse_address(address)
        self.token = token
        self.sinks = list(sinks)
        self.reconnect_s = reconnect_s
        self.connect_timeout = connect_timeout
        self.control = False
        self.missed = 0          # records the server dropped before this viewer got them
        self.received = 0
        self.reconnects = 0
        self.next_seq = 0        # the first record not yet received
        self.ended: RunEnded | None = None
        self._sock: socket.socket | None = None
        self._send_lock = threading.Lock()
        self._leave = threading.Event()

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    # -- commands (any thread) -------------------------------------------------------------------
    def _send_command(self, name: str, **kw) -> None:
        if not self.control:
            raise LayerScopeError("this run is served view-only (start it with --allow-control to pause or stop it)")
        sock = self._sock
        if sock is None:
            raise LayerScopeError(f"not connected to {self.address}")
        try:
            with self._send_lock:
                send_frame(sock, {"type": "command", "command": name, **kw})
        except OSError as e:
            raise LayerScopeError(f"could not send {name} to {self.address}: {e}") from None

    def pause(self) -> None:
        self._send_command("pause")

    def resume(self) -> None:
        self._send_command("resume")

    def stop(self) -> None:
        self._send_command("stop")

    def set_feature_node(self, node_id: str | None, first_channel: int = 0) -> None:
        self._send_command("feature", node=node_id, first_channel=int(first_channel))

    def disconnect(self) -> None:
        """Stop watching (the run goes on on the server); ``run()`` returns "stopped"."""
        self._leave.set()
        sock = self._sock
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    # -- receiving (the caller's thread) -----------------------------------------------------------
    def _connect(self) -> socket.socket:
        sock = socket.create_connection((self.host, self.port), timeout=self.connect_timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        send_frame(sock, {"type": "hello", "version": PROTOCOL_VERSION, "token": self.token, "since": self.next_seq})
        first = recv_frame(sock, MAX_SERVER_FRAME)
        if first["type"] == "refused":
            sock.close()
            raise _Refused(f"{self.address} refused the viewer: {first.get('message', '')}")
        if first["type"] != "welcome":
            sock.close()
            raise RemoteError(f"{self.address} is not a LayerScope run server (it answered {first['type']!r})")
        self.control = bool(first.get("control"))
        sock.settimeout(None)
        return sock

    def _receive(self, sock: socket.socket) -> bool:
        """Frames until RunEnded (True) or the connection drops (Closed / OSError)."""
        while True:
            frame = recv_frame(sock, MAX_SERVER_FRAME)
            kind = frame["type"]
            if kind == "record":
                seq, rec = decode_record(frame)
                if seq < self.next_seq:
                    continue  # already had it (a resend after reconnecting)
                self.next_seq = seq + 1
                self.received += 1
                for sink in self.sinks:
                    sink(rec)
                if isinstance(rec, RunEnded):
                    self.ended = rec
                    return True
            elif kind == "missed":
                count, nxt = frame.get("count"), frame.get("next_seq")
                if isinstance(count, int) and count > 0:
                    self.missed += count
                if isinstance(nxt, int) and nxt > self.next_seq:
                    self.next_seq = nxt
            elif kind in ("refused", "error"):
                raise RemoteError(f"{self.address}: {frame.get('message', kind)}")
            # "ack" and unknown frames from a newer server: nothing to do

    def run(self):
        """Receive until the run ends; a ``RunResult`` (engine.run.config) like ``Run.run()``."""
        from engine.run.config import RunResult

        lost_since = None
        message = ""
        while not self._leave.is_set():
            try:
                self._sock = self._connect()
                lost_since = None
                if self._receive(self._sock):
                    e = self.ended
                    note = f" ({self.missed} records missed)" if self.missed else ""
                    return RunResult(e.status, e.message + note, None, e.steps, dict(e.extra))
            except _Refused as e:
                return RunResult("failed", str(e), extra={"connection": "refused"})
            except RemoteError as e:
                if not isinstance(e, Closed):
                    return RunResult("failed", str(e), extra={"connection": "protocol"})
                message = f"lost the connection to {self.address}"
            except OSError as e:
                message = f"cannot reach {self.address}: {e.strerror or e}"
            finally:
                if self._sock is not None:
                    self._sock.close()
                    self._sock = None
            if self._leave.is_set():
                break
            now = time.monotonic()
            lost_since = lost_since or now
            if now - lost_since > self.reconnect_s:
                # never connected: the address is wrong (bad input); connected once: the link was lost
                how = "lost" if self.received else "unreachable"
                return RunResult("failed", f"{message} (gave up after {self.reconnect_s:g} s)", extra={"connection": how})
            self.reconnects += 1
            self._leave.wait(0.5)
        return RunResult("stopped", f"disconnected from {self.address}; the run goes on there")


class _Refused(RemoteError):
    """The server answered and refused (wrong token, too many viewers): retrying will not help."""
