"""The trace: the one data model every part of the harness shares.

A trace is a list of records, written to disk as JSON lines. Each record is a flat JSON object with
two keys always present:

- ``ts``: seconds, float, from the run's one clock (``trio.current_time()``; virtual in simulation);
- ``kind``: one of the ``KIND_*`` names below;

plus the fields that kind documents. ``conn`` is the gateway's connection id (1, 2, 3, ... in accept
order, per gateway instance); records about no particular connection leave it out.

The oracle judges a run from this file alone (plus the client's delivery log, a separate file), so
every record must carry enough to be read without the code that wrote it.

Kinds and their fields
----------------------
``conn_open``    conn, listener ("discovery" | "resume" | another label), peer ("host:port")
``tls_done``     conn
``ws_upgrade``   conn, path, query (dict of the query string), listener
``ws_rejected``  conn, status (HTTP status the upgrade was answered with), reason
``frame_in``     conn, op, size (bytes on the wire after decompression), plus by op:
                 op 1: d (the seq the client sent, or null);
                 op 2: shard ([id, n] or null), intents, token_ok (bool);
                 op 6: session_id, seq, token_ok; others: nothing more. With the gateway's
                 accept_any_token (app mode) op 2 and 6 also carry token_seen (redacted).
``frame_out``    conn, op, s (null unless op 0), t (null unless op 0), size, compressed (bool), plus
                 op 10: heartbeat_interval; op 9: d; op 0 READY: session_id, resume_gateway_url;
                 op 0 RESUMED: replayed (number of dispatches replayed before it).
``frame_bad``    conn, reason, size (a client frame the gateway could not accept; a close follows)
``conn_close``   conn, by ("client" | "server" | "network"), code (int or null), reason (str),
                 how ("close_frame" | "no_close_frame" | "reset" | "eof" | "timeout")
``session``      session_id, event ("created" | "attached" | "detached" | "invalidated" |
                 "expired"), reason, conn (where one applies), seq (last seq of the session)
``control``      action (a protocol-level fault from fake_gateway.controls), target (conn id or
                 "all"), params (dict)
``fault``        name, state ("on" | "off"), fault_kind ("toxic" | "control" | "proxy"),
                 params (dict); "on" is written before the fault acts, "off" after it has gone;
                 written by the runner when a scenario step switches a fault
``identify_budget`` remaining, total, bucket (max_concurrency bucket index); after each IDENTIFY
``rest``         method, path, status, implemented (bool: false when the fake has no such route
                 and answered Discord's 404 JSON); one per request to the REST API (not
                 /_harness/*), written by the REST server
``first_contact`` via ("connect" | "rest"), conn (via connect) or path (via rest), waited (seconds
                 from the client's start); the client's first connection attempt, its first
                 TCP connect (seen at a gateway listener: the proxies dial it as they accept) or
                 REST request: a wall-clock run's time 0; written by the runner
``wire_fault``   action (the control: corrupt_compression, reuse_compressor, malformed_frame,
                 delay_hello, recommended_shards), detail (what it did, for humans), conn (where
                 one applies), and by action: compress, bytes (hex of what was written);
                 from_conn (the connection whose compressor reuse_compressor continues); frame
                 (which malformed frame); shards, answer (/gateway/bot's count in its Nth answer
                 since the control). Written by the gateway (fake_gateway.wire) when the fault
                 acts on the wire, with the time it did
``frame_fault``  action (the control: server_frames, drop_mid_guilds, close_on_resume,
                 invalid_session_loop), conn, on_for (seconds the fault had been switched on or
                 armed when it acted), detail (what it did, for humans), and by action:
                 server_frames: mode (drop | delay | duplicate | reorder), op, t, s (of the frame
                 it picked), held (delay: seconds until the frame goes out); drop_mid_guilds:
                 guilds (GUILD_CREATEs sent before the cut), withheld (the ones cut off, still in
                 the session's history);
                 close_on_resume: code; invalid_session_loop: answered (op of the client frame).
                 Written by the gateway (fake_gateway.frames) when the fault acts. A dropped
                 frame has no ``frame_out``; a delayed one has its ``frame_out`` when it goes out
``note``         text (free-form, for humans); conn where one applies (the gateway notes a RESUME
                 on the discovery URL, an IDENTIFY on the resume URL, an IDENTIFY over
                 max_concurrency, an unsupported encoding or compress value)

The client's delivery log is one JSON line per dispatch handed to the application:
``{"s": int, "t": str, "session_id": str | null, "ts": float}``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO, Any

KIND_CONN_OPEN = "conn_open"
KIND_TLS_DONE = "tls_done"
KIND_WS_UPGRADE = "ws_upgrade"
KIND_WS_REJECTED = "ws_rejected"
KIND_FRAME_IN = "frame_in"
KIND_FRAME_OUT = "frame_out"
KIND_FRAME_BAD = "frame_bad"
KIND_CONN_CLOSE = "conn_close"
KIND_SESSION = "session"
KIND_CONTROL = "control"
KIND_FAULT = "fault"
KIND_IDENTIFY_BUDGET = "identify_budget"
KIND_REST = "rest"
KIND_FIRST_CONTACT = "first_contact"
KIND_WIRE_FAULT = "wire_fault"
KIND_FRAME_FAULT = "frame_fault"
KIND_NOTE = "note"

KINDS = frozenset(
    {
        KIND_CONN_OPEN,
        KIND_TLS_DONE,
        KIND_WS_UPGRADE,
        KIND_WS_REJECTED,
        KIND_FRAME_IN,
        KIND_FRAME_OUT,
        KIND_FRAME_BAD,
        KIND_CONN_CLOSE,
        KIND_SESSION,
        KIND_CONTROL,
        KIND_FAULT,
        KIND_IDENTIFY_BUDGET,
        KIND_REST,
        KIND_FIRST_CONTACT,
        KIND_WIRE_FAULT,
        KIND_FRAME_FAULT,
        KIND_NOTE,
    }
)

Record = dict[str, Any]


class Trace:
    """An append-only list of trace records, optionally mirrored to a JSON-lines file.

    ``clock`` stamps records that are appended without an explicit ``ts``; drivers pass
    ``trio.current_time`` so simulation and wall-clock runs share one notion of time.
    """

    def __init__(self, clock: Callable[[], float] | None = None, sink: IO[str] | None = None,
                 *, keep: bool = True):
        self.records: list[Record] = []
        # keep=False: only the sink and the listeners see records (a long-running `serve`, which
        # judges nothing, held every record of every closed connection in memory).
        self._keep = keep
        self._clock = clock
        self._sink = sink
        self._listeners: list[Callable[[Record], None]] = []

    def record(self, kind: str, *, ts: float | None = None, **fields: Any) -> Record:
        if kind not in KINDS:
            raise ValueError(f"unknown trace record kind {kind!r}")
        if ts is None:
            if self._clock is None:
                raise ValueError("Trace.record needs ts= when the trace has no clock")
            ts = self._clock()
        rec: Record = {"ts": round(float(ts), 6), "kind": kind, **fields}
        if self._keep:
            self.records.append(rec)
        if self._sink is not None:
            self._sink.write(json.dumps(rec, separators=(",", ":")) + "\n")
            self._sink.flush()
        for listener in self._listeners:
            listener(rec)
        return rec

    def subscribe(self, listener: Callable[[Record], None]) -> None:
        """Call ``listener`` with every record appended from now on (the runner's triggers)."""
        self._listeners.append(listener)

    def unsubscribe(self, listener: Callable[[Record], None]) -> None:
        self._listeners.remove(listener)

    def __iter__(self) -> Iterator[Record]:
        return iter(self.records)

    def __len__(self) -> int:
        return len(self.records)

    def of_kind(self, *kinds: str) -> list[Record]:
        return [r for r in self.records if r["kind"] in kinds]

    def dump(self, path: str | Path) -> None:
        write_jsonl(path, self.records)


def write_jsonl(path: str | Path, records: Iterable[Record]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for rec in records:
            f.write(json.dumps(rec, separators=(",", ":")) + "\n")


def load_jsonl(path: str | Path) -> list[Record]:
    """Load a JSON-lines file; a bad line raises ValueError naming the file and line."""
    records: list[Record] = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{lineno}: not JSON: {exc.msg}") from None
            if not isinstance(rec, dict):
                raise ValueError(f"{path}:{lineno}: expected a JSON object")
            records.append(rec)
    return records


def load_trace(path: str | Path) -> Trace:
    trace = Trace()
    for lineno, rec in enumerate(load_jsonl(path), 1):
        if "ts" not in rec or "kind" not in rec:
            raise ValueError(f"{path}:{lineno}: trace record needs 'ts' and 'kind'")
        trace.records.append(rec)
    return trace
