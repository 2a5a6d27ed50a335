"""``layerscope watch HOST:PORT --token T``: follow a served run (``profile --serve``) from here.

Prints the run's progress as ``profile`` does and, with ``--out``, writes a local copy of the
session from the records received (the server's own session file stays the record of the run;
records the server dropped for a slow viewer are missing from the copy, and it says so).
"""
from __future__ import annotations

import sys
from pathlib import Path

from engine.cli.common import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK
from engine.cli.output import Progress
from engine.errors import LayerScopeError


def cmd_watch(args) -> int:
    from engine.remote.client import RemoteRun
    from engine.remote.wire import parse_address

    parse_address(args.address)  # bad input: one line, exit 2
    if not args.token:
        raise LayerScopeError("--token is required: the server printed it when it started (profile --serve)")
    sinks = [Progress(quiet=args.quiet)]
    writer = None
    if args.out:
        from engine.session import SessionWriter

        out = Path(args.out).expanduser()
        if out.is_dir():
            raise LayerScopeError(f"--out {out} is a folder; give a file name")
        writer = SessionWriter(out, force=args.force)  # an existing session needs --force; never a foreign file
        sinks.append(writer)
    remote = RemoteRun(args.address, args.token, sinks, reconnect_s=args.reconnect)
    try:
        result = remote.run()
    except KeyboardInterrupt:
        remote.disconnect()
        return EXIT_INTERRUPTED
    finally:
        if writer is not None:
            writer.close()
    if remote.missed:
        print(f"note: {remote.missed} records were dropped by the server before this viewer received them",
              file=sys.stderr)
    if writer is not None and remote.received:
        print(f"copy: {args.out}")
    if result.status == "completed":
        return EXIT_OK
    connection = (result.extra or {}).get("connection")
    if connection in ("refused", "unreachable", "protocol"):  # the viewer's input was wrong, not the run
        print(result.message, file=sys.stderr)
        return EXIT_BAD_INPUT
    if connection == "lost":
        print(f"watch ended: {result.message}; the run may go on on the server (its session file has it)",
              file=sys.stderr)
        return EXIT_FAILED
    print(f"run {result.status}: {result.message}", file=sys.stderr)
    return EXIT_FAILED


def register(sub) -> None:
    """Add ``watch`` to the ``layerscope`` parser."""
    s = sub.add_parser("watch", help="follow a run served with `layerscope profile ... --serve HOST:PORT`")
    s.add_argument("address", metavar="HOST:PORT", help="where the run is served (through an SSH tunnel: the local end)")
    s.add_argument("--token", required=True, help="the token the server printed")
    s.add_argument("--out", default=None, help="also write a local copy of the session to this file")
    s.add_argument("--force", action="store_true", help="replace --out if it is an existing session")
    s.add_argument("--reconnect", type=float, default=30.0, metavar="S",
                   help="keep trying to reconnect for this long after the connection drops (default 30)")
    s.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    s.set_defaults(func=cmd_watch)
