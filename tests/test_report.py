"""Reports a user reads: terminal table, JSON results, JUnit XML, the HTML report, the matrix."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from html.parser import HTMLParser

from test_oracle_traces import Run, healthy_run, healthy_start, seed_failure_run

from gateway_common.trace import write_jsonl
from harness.oracle import Expectations, judge
from harness.report import (
    ScenarioResult,
    conformance_matrix,
    junit_xml,
    load_json,
    matrix_html,
    matrix_markdown,
    render_html,
    results_to_dict,
    summary_table,
    timeline_svg,
    write_html,
    write_json,
)
from harness.report.html import records_of

EXP = Expectations(outcome="resume", recovery_bound=3.0)


def result(name: str, run: Run, client: str = "reference", **kw) -> ScenarioResult:
    return ScenarioResult(
        name=name,
        mode="real",
        client=client,
        verdicts=judge(run.records, None, EXP),
        records=run.records,
        duration=6.5,
        **kw,
    )


def sample_results() -> list[ScenarioResult]:
    return [
        result(
            "seed-recovers", seed_failure_run(recovers=True), description="The seed, recovered."
        ),
        result(
            "seed-stuck",
            seed_failure_run(recovers=False),
            source="seed",
            seed=7,
            recovery_bound=3.0,
        ),
        ScenarioResult(
            name="broken-run",
            mode="real",
            client="reference",
            error="client exited with 1",
            stderr_tail="ConnectionResetError: [Errno 104]",
            duration=0.3,
        ),
    ]


def test_summary_table_lists_each_scenario_with_its_failed_invariants():
    table = summary_table(sample_results())
    lines = table.splitlines()
    assert lines[0].split()[:2] == ["scenario", "outcome"]
    stuck = next(line for line in lines if line.startswith("seed-stuck"))
    assert "FAIL" in stuck and "LV1" in stuck
    assert "PASS" in next(line for line in lines if line.startswith("seed-recovers"))
    assert "ERROR" in next(line for line in lines if line.startswith("broken-run"))
    assert lines[-1] == "1 passed, 2 failed (1 errors) of 3 scenario(s)"
    assert "\x1b[31m" in summary_table(sample_results(), color=True)


def test_json_results_follow_the_documented_schema_and_round_trip(tmp_path):
    results = sample_results()
    data = results_to_dict(results, meta={"seed": 7})
    assert data["summary"]["passed"] == 1 and data["summary"]["failed"] == 2
    for scenario in data["scenarios"]:
        assert {"name", "mode", "client", "passed", "verdicts"} <= scenario.keys()
        assert isinstance(scenario["passed"], bool)
        for v in scenario["verdicts"]:
            assert {"invariant", "status", "evidence"} <= v.keys()
            assert v["status"] in ("pass", "fail", "not_judged")
    stuck = data["scenarios"][1]
    assert stuck["passed"] is False and "LV1" in stuck["failed_invariants"]
    path = tmp_path / "results.json"
    write_json(results, path)
    assert json.loads(path.read_text())["summary"] == data["summary"]
    loaded = load_json(path)
    assert [(r.name, r.passed, r.failed_invariants) for r in loaded] == [
        (r.name, r.passed, r.failed_invariants) for r in results
    ]


def test_junit_has_one_testcase_per_scenario_and_failures_carry_evidence():
    root = ET.fromstring(junit_xml(sample_results()))
    cases = root.findall(".//testcase")
    assert [c.get("name") for c in cases] == ["seed-recovers", "seed-stuck", "broken-run"]
    assert root.get("tests") == "3" and root.get("failures") == "1" and root.get("errors") == "1"
    assert cases[0].find("failure") is None
    failure = cases[1].find("failure")
    assert failure is not None and "LV1" in failure.get("message", "")
    assert "never became live again" in (failure.text or "")
    error = cases[2].find("error")
    assert error is not None and "client exited with 1" in error.get("message", "")
    assert "ConnectionResetError" in (cases[2].findtext("system-err") or "")


class _Collect(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.ids: set[str] = set()
        self.hrefs: list[str] = []
        self.tags: list[str] = []
        self.srcs: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        a = dict(attrs)
        if "id" in a:
            self.ids.add(a["id"])
        if "href" in a:
            self.hrefs.append(a["href"])
        if "src" in a:
            self.srcs.append(a["src"])


def test_html_report_is_self_contained_and_every_violation_links_to_its_evidence(tmp_path):
    target = write_html(sample_results(), tmp_path, meta={"seed": 7})
    assert target.name == "report.html"
    page = target.read_text()
    parser = _Collect()
    parser.feed(page)
    assert "script" not in parser.tags and "link" not in parser.tags and not parser.srcs
    assert re.findall(r"https?://[^\s\"<]*", page) == ["http://www.w3.org/2000/svg"] * page.count(
        "<svg"
    )
    assert page.count("<svg") == 2  # the broken run has no trace to draw
    assert all(h.startswith("#") for h in parser.hrefs)
    missing = [h for h in parser.hrefs if h[1:] not in parser.ids]
    assert not missing
    violation_links = re.findall(r'<a href="#([^"]+-LV1)"><g class="violation">', page)
    assert violation_links, "the stuck seed run marks its LV1 violation on the timeline"
    assert "never became live again" in page
    assert "client exited with 1" in page and "ConnectionResetError" in page
    assert "The seed, recovered." in page
    assert page.count(">recovery bound<") == 1  # only the result that states its bound


def test_timeline_draws_lanes_faults_heartbeats_and_closes():
    run = seed_failure_run(recovers=True)
    svg = timeline_svg(run.records, judge(run.records, None, EXP))
    ET.fromstring(svg)  # well-formed XML
    for lane in ("conn 1", "conn 2", "conn 3"):
        assert f">{lane}<" in svg
    beats = sum(1 for r in run.records if r["kind"] == "frame_in" and r["op"] == 1)
    assert svg.count("client heartbeat d=") == beats
    assert "RST (network)" in svg
    assert "tls-reset" in svg and 'fill-opacity="0.13"' in svg
    assert "RESUME seq=3" in svg and "RESUMED" in svg
    assert 'class="violation"' not in svg  # the recovered run violates nothing


def test_timeline_of_an_empty_trace_says_so():
    svg = timeline_svg([])
    ET.fromstring(svg)
    assert "no connection reached the gateway" in svg


def test_html_loads_records_from_the_trace_file_when_not_in_memory(tmp_path):
    run = healthy_run()
    path = tmp_path / "trace.jsonl"
    write_jsonl(path, run.records)
    r = ScenarioResult(
        name="from-file",
        mode="sim",
        client="reference",
        verdicts=judge(run.records),
        trace_path=path,
    )
    assert records_of(r) == run.records
    assert "<svg" in render_html([r])


def test_conformance_matrix_in_markdown_and_html():
    results = sample_results()
    other = [
        result("seed-recovers", seed_failure_run(recovers=True), client="discord.py"),
        result("seed-stuck", seed_failure_run(recovers=True), client="discord.py"),
    ]
    m = conformance_matrix(results + other)
    assert m.clients == ("reference", "discord.py")
    assert m.cell("seed-stuck", "reference").status == "fail"
    assert "LV1" in m.cell("seed-stuck", "reference").failed
    assert m.cell("broken-run", "discord.py").status == "missing"
    md = matrix_markdown(results + other)
    row = next(line for line in md.splitlines() if line.startswith("| seed-stuck |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[1].startswith("❌ FAIL") and "LV1" in cells[1] and cells[2].startswith("✅ pass")
    assert "**1/3**" in md and "**2/3**" in md
    page = matrix_html(results + other)
    assert '<td class="fail"' in page and '<td class="error"' in page and "http" not in page


def test_a_run_that_judged_nothing_is_not_a_pass():
    empty = Run().rec("note", 0.0, text="world: real mode")
    r = ScenarioResult(name="never-started", mode="real", client="x", verdicts=judge(empty.records))
    assert all(v.status == "not_judged" for v in r.verdicts)
    assert r.outcome == "UNJUDGED" and not r.passed
    assert "UNJUDGED" in summary_table([r]) and "did the client run?" in summary_table([r])
    case = ET.fromstring(junit_xml([r])).find(".//testcase")
    assert case is not None and case.find("failure") is not None
    assert results_to_dict([r])["summary"] == {
        "passed": 0,
        "failed": 1,
        "errors": 0,
        "total": 1,
        "duration": 0.0,
    }
    assert conformance_matrix([r]).cell("never-started", "x").status == "unjudged"


def test_timeline_of_a_long_busy_run_stays_a_readable_size():
    run = healthy_start()
    for i in range(5000):
        run.beat(1, 0.5 + i, 3)
    for i in range(40):  # overlapping faults with long names
        run.fault(f"latency-spike-number-{i}", 10.0 + i, "on").fault(
            f"latency-spike-number-{i}", 900.0, "off"
        )
    svg = timeline_svg(run.records, [])
    ET.fromstring(svg)
    assert 0 < svg.count("client heartbeat d=") <= 700  # about one mark per 1.5 px
    height = int(re.search(r'viewBox="0 0 \d+ (\d+)"', svg).group(1))
    assert height < 400  # at most 6 fault rows above one lane
    assert svg.count("latency-spike-number-") >= 40  # every fault keeps its name in a tooltip
