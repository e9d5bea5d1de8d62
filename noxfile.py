"""nox sessions used by CI and by people: `nox -s tests`, `nox -s tests_slow`, `nox -s lint`,
`nox -s scenarios`, `nox -s toxiproxy`."""

from __future__ import annotations

from pathlib import Path

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


# nox -s mutation -- TARGET [MUTANT-GLOB ...]: what each target mutates and the fast, sans-I/O-first
# test files that cover it (the rest of mutmut's settings: pyproject's [tool.mutmut]).
MUTATION_TARGETS: dict[str, dict[str, list[str]]] = {
    "oracle": {
        "mutate": ["harness/oracle/*.py"],
        "tests": ["tests/test_oracle.py", "tests/test_oracle_mutation_rules.py",
                  "tests/test_facts.py", "tests/test_verdict_backoff.py", *sorted(
                      str(p.relative_to(Path(__file__).parent)) for p in
                      (Path(__file__).parent / "tests").glob("test_oracle_evidence_*.py"))],
    },
    "gateway": {
        "mutate": ["fake_gateway/protocol.py", "fake_gateway/sessions.py",
                   "fake_gateway/controls.py", "fake_gateway/codec.py"],
        # Not tests/test_gateway_closes.py: real sockets, seconds per test and up to the
        # timeout for a mutant that stalls a close; test_gateway_core_rules.py pins the same
        # close codes at the core.
        "tests": ["tests/test_gateway_core.py", "tests/test_gateway_core_rules.py",
                  "tests/test_gateway_controls.py", "tests/test_gateway_wire.py",
                  "tests/test_facts.py"],
    },
    "client": {
        "mutate": ["harness/client/core.py"],
        "tests": ["tests/test_client_core.py", "tests/test_client_codec.py"],
    },
}


@nox.session(python=False)
def mutation(session: nox.Session) -> None:
    """Mutation testing (issue 19.1): mutmut changes one thing at a time in the oracle
    (harness/oracle/), the gateway's sans-I/O core (fake_gateway protocol, sessions, controls,
    codec) or the client core, runs the tests that call the changed function (-x), and prints
    each target's kill rate and surviving mutants. `-- oracle` (or gateway, client; default
    oracle gateway) picks targets; further arguments are mutant-name globs (mutmut's names,
    e.g. 'harness.oracle.backoff.x_check_bo1__mutmut_*') to run only those. Each target works
    in its own copy (build/mutation/TARGET/) kept between runs, so a second run re-tests only
    what changed. MUTATION_JOBS (default 2) mutants at a time. Long (tens of minutes per target
    on 2 cores): not in the default run or CI."""
    import json
    import os
    import re
    import shutil
    from pathlib import Path

    session.run("python3", "-m", "pip", "install", "-q", "-e", ".[dev]")
    targets = [a for a in session.posargs if a in MUTATION_TARGETS] or ["oracle", "gateway"]
    globs = [a for a in session.posargs if a not in MUTATION_TARGETS]
    root = Path(__file__).parent
    jobs = os.environ.get("MUTATION_JOBS", "2")

    def copy_if_changed(src: str, dst: str) -> None:
        # mutmut tells an unmutated copy by its mtime: copy only what changed, keeping mtimes.
        s, d = os.stat(src), (os.stat(dst) if os.path.exists(dst) else None)
        if d is None or (s.st_mtime, s.st_size) != (d.st_mtime, d.st_size):
            shutil.copy2(src, dst)

    summary = []
    for target in targets:
        work = root / "build" / "mutation" / target
        for name in ["gateway_common", "fake_gateway", "harness", "tests", "scenarios"]:
            shutil.copytree(root / name, work / name, dirs_exist_ok=True,
                            copy_function=copy_if_changed,
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        copy_if_changed(str(root / "README.md"), str(work / "README.md"))
        # The copy's pyproject: ours, with this target's files and tests in [tool.mutmut].
        spec = MUTATION_TARGETS[target]
        tests = [t for t in spec["tests"] if (root / t).exists()]
        pyproject = (root / "pyproject.toml").read_text()
        pyproject = re.sub(r"(?m)^only_mutate = \[[^\]]*\]\n", "", pyproject)
        pyproject = pyproject.replace(
            "[tool.mutmut]\n",
            f"[tool.mutmut]\nonly_mutate = {json.dumps(spec['mutate'])}\n"
            f"pytest_add_cli_args_test_selection = {json.dumps(tests)}\n",
        )
        if not (work / "pyproject.toml").exists() or (
            (work / "pyproject.toml").read_text() != pyproject
        ):
            (work / "pyproject.toml").write_text(pyproject)
        with session.chdir(work):
            session.run("mutmut", "run", "--max-children", jobs, *globs)

        # The figures, from mutmut's .meta files (each mutant's exit code; mutmut.stats names
        # them): a failing test (1, 3) or a timeout (36, 24, -24, 152, 255) detects the mutant;
        # 0 survived; 5 and 33 mean no selected test calls the function.
        detected = {1, 3, 36, 24, -24, 152, 255}
        label = {0: "survived", 5: "no tests", 33: "no tests", None: "not run"}
        codes: dict[str, int | None] = {}
        for meta in sorted((work / "mutants").rglob("*.py.meta")):
            codes.update(json.loads(meta.read_text()).get("exit_code_by_key", {}))
        tested = {k: c for k, c in codes.items() if c is not None}  # a glob runs only some
        killed = sum(1 for c in tested.values() if c in detected)
        rate = 100.0 * killed / len(tested) if tested else 0.0
        for key, code in sorted(tested.items()):
            if code not in detected:
                print(f"  {target} {label.get(code, f'exit {code}')}: {key}")
        summary.append(f"{target}: {killed}/{len(tested)} tested mutants killed ({rate:.1f}%), "
                       f"{len(codes) - len(tested)} of {len(codes)} not tested yet; "
                       f"one survivor's diff: cd {work} && mutmut show MUTANT")
    for line in summary:
        session.log(line)
