"""Reports: terminal summary, JSON results, JUnit XML, one self-contained HTML file per run, and the
clients x scenarios conformance matrix. All take a list of ``ScenarioResult``."""

from harness.report.html import render_html, write_html
from harness.report.json_results import load_json, results_from_dict, results_to_dict, write_json
from harness.report.junit import junit_xml, write_junit
from harness.report.matrix import conformance_matrix, matrix_html, matrix_markdown
from harness.report.model import RunSummary, ScenarioResult, summarize
from harness.report.text import failure_details, summary_table
from harness.report.timeline import timeline_svg

__all__ = [
    "RunSummary",
    "ScenarioResult",
    "conformance_matrix",
    "failure_details",
    "junit_xml",
    "load_json",
    "matrix_html",
    "matrix_markdown",
    "render_html",
    "results_from_dict",
    "results_to_dict",
    "summarize",
    "summary_table",
    "timeline_svg",
    "write_html",
    "write_json",
    "write_junit",
]
