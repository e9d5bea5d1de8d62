"""nox sessions used by CI and by people: `nox -s tests`, `nox -s lint`, `nox -s scenarios`."""

from __future__ import annotations

import nox

nox.options.sessions = ["lint", "tests"]
nox.options.reuse_existing_virtualenvs = True

PY = ["3.11", "3.12", "3.13"]


@nox.session(python=False)
def tests(session: nox.Session) -> None:
    """The project's test suite (the README's test command)."""
    session.run("python3", "-m", "pip", "install", "-q", "-e", ".[test]")
    session.run("python3", "-m", "pytest", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff and mypy over the project's own code."""
    session.install("-e", ".[dev]")
    session.run("ruff", "check", "fake_gateway", "harness", "tests", "noxfile.py")
    session.run("mypy", "fake_gateway", "harness")


@nox.session
def scenarios(session: nox.Session) -> None:
    """The built-in scenario suite against the reference client, wall-clock mode."""
    session.install("-e", ".")
    session.run(
        "gateway-harness", "run", "scenarios/", "--mode", "real", "--jobs", "2",
        "--report", "reports", "--junit", "reports/junit.xml", *session.posargs,
    )
