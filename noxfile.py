"""nox sessions used by CI and by people: `nox -s tests`, `nox -s tests_slow`, `nox -s lint`,
`nox -s scenarios`, `nox -s toxiproxy`."""

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


@nox.session(python=False)
def tests_slow(session: nox.Session) -> None:
    """The slow-marked tests (-m slow), which the default run leaves out (pyproject's addopts):
    real clients on their own heartbeat clock, long validation runs."""
    session.run("python3", "-m", "pip", "install", "-q", "-e", ".[test]")
    session.run("python3", "-m", "pytest", "-m", "slow", *session.posargs)


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
        "--out", "reports", "--junit", "reports/junit.xml", *session.posargs,
    )


@nox.session
def toxiproxy(session: nox.Session) -> None:
    """The real Toxiproxy 2.12.0 beside ours: builds it (.ci/install-toxiproxy: needs Go, cached
    in .tools/bin), runs the proxy tests against both servers, then the built-in suite through
    the real one on a free loopback port (scenarios needing an extension of ours are skipped
    and listed with the reason)."""
    import os
    import socket
    import subprocess
    import time

    binary = session.run(".ci/install-toxiproxy", external=True, silent=True)
    binary = str(binary).strip().splitlines()[-1]
    session.install("-e", ".[test]")
    env = {"TOXIPROXY_SERVER": binary, "CI": "true"}  # CI: a missing server fails, not skips
    session.run("python", "-m", "pytest", "-q", "tests/test_faults_api.py",
                "tests/test_faults_toxiproxy_python.py", "tests/test_faults_backend.py",
                "tests/test_faults_same_bytes.py", "tests/test_faults_real_suite.py", env=env)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = subprocess.Popen([binary, "-host", "127.0.0.1", "-port", str(port)],
                              stdout=subprocess.DEVNULL, env={**os.environ, "LOG_LEVEL": "warn"})
    try:
        for _ in range(500):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.02)
        session.run(
            "gateway-harness", "run", "scenarios/", "--toxiproxy-url", f"http://127.0.0.1:{port}",
            "--out", "reports/toxiproxy", "--junit", "reports/toxiproxy/junit.xml",
            *session.posargs,
        )
    finally:
        server.terminate()
        server.wait(timeout=30)


CLIENTS = ["discord.py", "hikari", "nextcord", "disnake", "py-cord", "discord.js", "midjourney"]


@nox.session
@nox.parametrize("client", CLIENTS)
def validate(session: nox.Session, client: str) -> None:
    """One third-party client through the default validation suite (wall clock, wss)."""
    session.install("-e", ".")
    session.run(
        "gateway-harness", "validate", "--client", client, "--out", f"reports/validate-{client}",
        "--json", f"reports/validate-{client}.json", *session.posargs,
    )


@nox.session
def fuzz(session: nox.Session) -> None:
    """A Hypothesis campaign against the reference client; the example database is kept in
    .hypothesis/ (cache it between CI runs) so a failure found once is retried first."""
    session.install("-e", ".")
    session.run("gateway-harness", "fuzz", "--examples", "200", *session.posargs)


@nox.session
@nox.parametrize("client", CLIENTS)
def fuzz_client(session: nox.Session, client: str) -> None:
    """A wall-clock campaign against one built-in client (issue 12.3): generated fault schedules,
    2 worlds at a time, 10 minutes of search by default (posargs add or override flags, e.g.
    `-- --time-budget 1800 --examples 500`); each finding is a bug bundle under
    reports/fuzz-CLIENT/, its minimal schedule kept in .hypothesis/ for the next campaign. A
    finding does not fail the session: the bundles are what it is for."""
    session.install("-e", ".")
    session.run(
        "gateway-harness", "fuzz", client, "--jobs", "2", "--examples", "200",
        "--out", f"reports/fuzz-{client}", *session.posargs, success_codes=[0, 1],
    )


@nox.session
def seed(session: nox.Session) -> None:
    """The seed end to end: the real midjourney client and the reference client through the same
    reconnect-reset-during-TLS scenario, side by side in one report."""
    session.install("-e", ".")
    session.run(
        "gateway-harness", "validate", "--client", "midjourney", "--client", "reference",
        "harness/adapters/validation/seed", "--out", "reports/seed",
        "--json", "reports/seed.json", *session.posargs,
        success_codes=[0, 1],  # midjourney is expected to fail LV1: that is the point
    )
