import json

import pytest

from gateway_common.trace import Trace, load_trace


def test_trace_round_trips_through_jsonl(tmp_path):
    now = [0.0]
    trace = Trace(clock=lambda: now[0])
    trace.record("conn_open", conn=1, listener="discovery", peer="127.0.0.1:5000")
    now[0] = 1.5
    trace.record("frame_in", conn=1, op=1, d=None, size=16)
    path = tmp_path / "trace.jsonl"
    trace.dump(path)
    loaded = load_trace(path)
    assert loaded.records == trace.records
    assert [r["ts"] for r in loaded] == [0.0, 1.5]


def test_unknown_kind_is_rejected():
    with pytest.raises(ValueError, match="unknown trace record kind"):
        Trace(clock=lambda: 0.0).record("frame_sideways")


def test_bad_trace_line_names_file_and_line(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_text(json.dumps({"ts": 0, "kind": "note", "text": "x"}) + "\n{oops\n")
    with pytest.raises(ValueError, match=r"t\.jsonl:2"):
        load_trace(path)


def test_listeners_see_records_as_they_are_appended():
    seen = []
    trace = Trace(clock=lambda: 0.0)
    trace.subscribe(seen.append)
    trace.record("note", text="hello")
    assert seen == [trace.records[0]]
