"""The CI recipe (.github/workflows/ci.yml, issue 15.4): actionlint finds nothing wrong with it,
and every command it runs is one these tests run too, or parse with the CLI that would run it:
a workflow that cannot run here must not rot unnoticed."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
WORKFLOW = REPO / ".github" / "workflows" / "ci.yml"


def actionlint() -> str:
    """$ACTIONLINT, actionlint on PATH, or .ci/install-actionlint's build (skip without; in CI
    (CI=true, .ci/run builds it) a failure)."""
    found = (os.environ.get("ACTIONLINT") or shutil.which("actionlint")
             or next((str(p) for p in [REPO / ".tools" / "bin" / "actionlint"] if p.exists()),
                     None))
    if found is None:
        why = "actionlint not found: export ACTIONLINT=\"$(.ci/install-actionlint)\" (needs Go)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(why)
        pytest.skip(why)
    return found


def test_actionlint_finds_nothing_wrong() -> None:
    run = subprocess.run([actionlint(), "-no-color", str(WORKFLOW)], capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr


def test_actionlint_would_catch_a_broken_workflow(tmp_path: Path) -> None:
    broken = tmp_path / ".github" / "workflows" / "ci.yml"
    broken.parent.mkdir(parents=True)
    text = WORKFLOW.read_text().replace("${{ matrix.client }}')", "${{ matrix.clients }}')")
    broken.write_text(text)
    run = subprocess.run([actionlint(), "-no-color", str(broken)], capture_output=True,
                         text=True, timeout=120, cwd=tmp_path)
    assert run.returncode == 1 and "matrix.clients" in run.stdout, run.stdout + run.stderr


# ---- every command the workflow runs ------------------------------------------------------------


def workflow() -> dict[Any, Any]:
    return yaml.safe_load(WORKFLOW.read_text())


def commands() -> Iterator[tuple[str, list[str]]]:
    """(job, argv) for each command line of each `run:` step, once per matrix value, with
    ${{ matrix.* }} and the job's env defaults filled in."""
    for job_id, job in workflow()["jobs"].items():
        matrix = job.get("strategy", {}).get("matrix", {})
        combos: list[dict[str, str]] = [{"client": c} for c in matrix.get("client", [])] or [{}]
        env = {}
        for name, value in job.get("env", {}).items():  # ${{ secrets.X || 'default' }}
            fallback = re.search(r"\|\|\s*'([^']*)'", str(value))
            env[name] = fallback.group(1) if fallback else str(value)
        for combo in combos:
            for step in job["steps"]:
                if "run" not in step:
                    continue
                script = step["run"]
                for key, value in combo.items():
                    script = re.sub(r"\$\{\{\s*matrix\." + key + r"\s*\}\}", value, script)
                assert "${{" not in script, f"{job_id}: unexpanded expression in {script!r}"
                for name, value in env.items():
                    script = script.replace(f'"${name}"', value).replace(f"${name}", value)
                for line in script.splitlines():
                    if line.strip():
                        yield job_id, shlex.split(line)


class RecordingSession:
    """Stands in for nox's Session to read which commands a nox session runs (not run them)."""

    def __init__(self, posargs: list[str]) -> None:
        self.posargs = posargs
        self.ran: list[list[str]] = []

    def run(self, *argv: str, **_: Any) -> str:
        self.ran.append(list(argv))
        return "/path/of/a/tool"

    def install(self, *_: str, **__: Any) -> None:
        pass

    def log(self, *_: Any) -> None:
        pass


def nox_session_commands(spec: str, posargs: list[str]) -> list[list[str]]:
    """What `nox -s SPEC -- POSARGS` runs, read from noxfile.py's session function."""
    sys.path.insert(0, str(REPO))
    try:
        import noxfile
    finally:
        sys.path.remove(str(REPO))
    name, _, params = spec.partition("(")
    kwargs = dict(re.findall(r"(\w+)='([^']*)'", params))
    func = getattr(noxfile, name, None)
    assert func is not None, f"nox -s {spec}: noxfile.py has no session {name!r}"
    if kwargs:
        assert kwargs["client"] in noxfile.CLIENTS, f"nox -s {spec}: not a parametrized value"
    session = RecordingSession(posargs)
    func(session, **kwargs)
    return session.ran


def check_gateway_harness(argv: list[str]) -> None:
    """The CLI parses it (no SystemExit) and its values pass the checks done before a run."""
    from harness.adapters.registry import ADAPTERS
    from harness.campaign import parse_database
    from harness.cli import build_parser

    args = build_parser(argv[0]).parse_args(argv)
    if argv[0] == "fuzz" and not args.no_database:
        parse_database(args.database)
    if argv[0] == "validate":
        assert all(c in ADAPTERS or c == "reference" for c in args.clients), argv


def check_command(job: str, argv: list[str], checked: list[str]) -> None:
    line = " ".join(argv)
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"][
        "optional-dependencies"]
    if argv == ["sudo", "apt-get", "update"]:
        pass
    elif argv == ["sudo", "apt-get", "install", "-y", "redis-server"]:
        assert "apt-get install -y redis-server" in (REPO / ".ci" / "run").read_text()
    elif argv[:4] == ["python", "-m", "pip", "install"]:
        for target in argv[4:]:
            extra = re.fullmatch(r"\.\[(\w+)\]", target)
            assert target in ("nox", "-e") or (extra and extra.group(1) in extras), line
    elif m := re.fullmatch(r"\w+=\$\((\.ci/[\w-]+)\)", line):
        assert os.access(REPO / m.group(1), os.X_OK), line
    elif argv[0] == "export":
        pass
    elif argv[:2] == ["nox", "-s"]:
        specs = argv[2:argv.index("--")] if "--" in argv else argv[2:]
        posargs = argv[argv.index("--") + 1:] if "--" in argv else []
        for spec in specs:
            for ran in nox_session_commands(spec, posargs):
                if ran[0] == "gateway-harness":
                    check_gateway_harness(ran[1:])
                else:  # pip, pytest (the suite this test is in), ruff and mypy
                    assert ran[0] in ("python3", "python", "ruff", "mypy"), ran
    elif argv[:4] == ["python", "-m", "pytest", "scenarios/"]:
        run = subprocess.run([sys.executable, *argv[1:], "--collect-only", "-q",
                              "-p", "no:cacheprovider"],
                             capture_output=True, text=True, cwd=REPO, timeout=300)
        assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
        items = [x for x in run.stdout.splitlines() if ".toml::" in x]
        scenarios = list((REPO / "scenarios").rglob("*.toml"))
        assert len(items) == 2 * len(scenarios), run.stdout[-2000:]  # real and sim
    else:
        pytest.fail(f"{job}: a command no test checks: {line}")
    checked.append(f"{job}: {line}")


def test_every_command_the_workflow_runs_is_checked() -> None:
    checked: list[str] = []
    for job, argv in commands():
        check_command(job, argv, checked)
    text = "\n".join(checked)
    assert "nox -s lint tests" in text
    for client in ("discord.py", "midjourney"):
        assert f"validate: nox -s validate(client='{client}')" in text
    assert "--database redis://localhost:6379/0" in text


def test_the_validate_matrix_is_every_built_in_client() -> None:
    from harness.adapters.registry import ADAPTERS

    matrix = workflow()["jobs"]["validate"]["strategy"]["matrix"]["client"]
    assert matrix == list(ADAPTERS)


def test_the_fuzz_job_runs_on_schedule_with_redis_and_uploads_bundles() -> None:
    # PyYAML reads the key `on` as True (YAML 1.1)
    data = workflow()
    triggers = data["on"] if "on" in data else data[True]
    assert "schedule" in triggers
    fuzz = data["jobs"]["fuzz"]
    assert "schedule" in fuzz["if"]
    assert fuzz["services"]["redis"]["image"].startswith("redis:")
    uploads = [s for s in fuzz["steps"] if str(s.get("uses", "")).startswith(
        "actions/upload-artifact")]
    assert uploads and uploads[0]["if"] == "always()" and uploads[0]["with"]["path"] == "reports/"
