"""A shared Hypothesis example database on Redis (issue 15.3): `fuzz --database redis://...` and
`--shared-database`, against a real redis-server (REDIS_URL, or one started here on a free
loopback port; its DB is emptied by the tests)."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

MUTANT = "no-zombie-detection"
# Fault kinds among which 50 examples find the mutant's ZB1 (seeds 1-5 all do), and a seed whose
# single example does not (the control below checks it): only the database can make it find it.
# Every campaign here names the same kinds: they are part of the database key.
FAULTS = "withhold_acks,reset,latency,close"
FINDING_SEED, ONE_EXAMPLE_SEED = "4", "999"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def redis_server() -> Iterator[str]:
    """redis://HOST:PORT: $REDIS_URL's server, else a redis-server of our own (skipped, in CI
    failed, when the binary is missing: .ci/run installs it)."""
    url = os.environ.get("REDIS_URL")
    if url:
        yield url.rstrip("/").rsplit("/", 1)[0] if url.count("/") > 2 else url.rstrip("/")
        return
    binary = shutil.which("redis-server")
    if binary is None:
        why = "redis-server not found (Debian: apt-get install redis-server), REDIS_URL unset"
        if os.environ.get("CI", "").lower() == "true":  # .ci/run: fail, not skip
            pytest.fail(why)
        pytest.skip(why)
    port = free_port()
    server = subprocess.Popen([binary, "--bind", "127.0.0.1", "--port", str(port), "--save", "",
                               "--appendonly", "no"], stdout=subprocess.DEVNULL)
    try:
        import redis

        client = redis.Redis(host="127.0.0.1", port=port)
        for _ in range(500):
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if server.poll() is not None:
                    pytest.fail(f"redis-server exited with {server.returncode}")
                time.sleep(0.02)
        yield f"redis://127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait(timeout=30)


@pytest.fixture
def redis_db(redis_server: str) -> Iterator[str]:
    """An empty Redis DB (number 1) for one test."""
    import redis

    url = f"{redis_server}/1"
    redis.Redis.from_url(url).flushdb()
    yield url
    redis.Redis.from_url(url).flushdb()


def fuzz(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """`gateway-harness fuzz` in its own process (each campaign a machine of its own)."""
    return subprocess.run([sys.executable, "-m", "harness", "fuzz", "--client", MUTANT,
                           "--faults", FAULTS, *args],
                          capture_output=True, text=True, cwd=cwd, timeout=600)


def finding(run: subprocess.CompletedProcess[str]) -> tuple[str, list[str]]:
    """The invariant a campaign found and its shrunk schedule's steps, as it printed them."""
    assert run.returncode == 1, run.stdout + run.stderr
    (invariant,) = re.findall(r"^FAIL (\w+) ", run.stdout, re.M)
    steps = re.findall(r"^  - (.*)$", run.stdout, re.M)
    assert steps
    return invariant, steps


def stored(url: str) -> dict[Any, Any]:
    """Every example the Redis DB holds, by key."""
    import redis

    server = redis.Redis.from_url(url)
    return {key: server.smembers(key) for key in server.keys("hypothesis-example:*")}


def test_two_campaigns_sharing_one_redis_find_a_failure_once(redis_db: str,
                                                             tmp_path: Path) -> None:
    first = fuzz("--examples", "50", "--seed", FINDING_SEED, "--database", redis_db,
                 "--out", "first", cwd=tmp_path)
    invariant, steps = finding(first)
    assert invariant == "ZB1"
    assert stored(redis_db), "the first campaign kept its failing example in Redis"
    assert not (tmp_path / ".hypothesis" / "examples").exists()  # nor in a local folder

    # Another process, another seed, one example: it replays the first's failing example (the
    # database is read before any example is generated) and reports the same shrunk schedule.
    second = fuzz("--examples", "1", "--seed", ONE_EXAMPLE_SEED, "--database", redis_db,
                  "--out", "second", cwd=tmp_path)
    assert finding(second) == (invariant, steps)

    # The control: the same campaign with an empty database finds nothing.
    empty = redis_db.rsplit("/", 1)[0] + "/2"
    import redis

    redis.Redis.from_url(empty).flushdb()
    control = fuzz("--examples", "1", "--seed", ONE_EXAMPLE_SEED, "--database", empty,
                   "--out", "control", cwd=tmp_path)
    assert control.returncode == 0, control.stdout + control.stderr
    assert "no invariant failed" in control.stdout


def test_people_read_the_shared_database_and_write_only_their_own(redis_db: str,
                                                                  tmp_path: Path) -> None:
    ci = fuzz("--examples", "50", "--seed", FINDING_SEED, "--database", redis_db,
              "--out", "ci", cwd=tmp_path)
    found = finding(ci)
    before = stored(redis_db)

    local = tmp_path / "mine"
    person = fuzz("--examples", "1", "--seed", ONE_EXAMPLE_SEED, "--database", str(local),
                  "--shared-database", redis_db, "--out", "person", cwd=tmp_path)
    assert finding(person) == found  # CI's finding, replayed first
    assert stored(redis_db) == before  # read-only: nothing added, nothing deleted
    assert any((local / "examples").rglob("*")), "the finding is kept in the local database"

    # Without the shared one, the local database alone now brings it back too.
    again = fuzz("--examples", "1", "--seed", ONE_EXAMPLE_SEED, "--database", str(local),
                 "--out", "again", cwd=tmp_path)
    assert finding(again) == found


def test_wallclock_findings_are_shared_through_redis_too(redis_db: str, tmp_path: Path) -> None:
    """A wall-clock finding's minimal schedule (kept as scenario TOML) is read back by another
    machine's campaign against the same client, through the shared database."""
    from harness.campaign import CampaignConfig, _known_findings, _remember
    from harness.scenario import builtin_scenarios_dir, load_scenario

    scenario = load_scenario(builtin_scenarios_dir() / "f11-ack-blackhole.toml")
    _remember(CampaignConfig(client="hikari", database=redis_db, mode="real"), scenario)
    reader = CampaignConfig(client="hikari", database=tmp_path / "db",
                            shared_database=redis_db, mode="real")
    (known,) = _known_findings(reader)
    assert known.steps == scenario.steps and known.name == scenario.name
    assert _known_findings(CampaignConfig(client="discord.py", database=redis_db)) == []


@pytest.mark.parametrize(("flag", "value", "message"), [
    ("--database", "redis://127.0.0.1:abc/0", "the port is not a number"),
    ("--database", "redis://127.0.0.1:6379/zero", "DB is a number"),
    ("--database", "redis://:6379/0", "no host or no port"),
    ("--shared-database", "http://127.0.0.1:6379/0", "scheme 'http'"),
    ("--shared-database", "CLOSED", "cannot reach redis://127.0.0.1:"),
])
def test_a_bad_database_url_is_one_line(flag: str, value: str, message: str,
                                        tmp_path: Path) -> None:
    if value == "CLOSED":
        value = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    run = fuzz("--examples", "1", flag, value, cwd=tmp_path)
    assert run.returncode == 2
    (line,) = run.stderr.strip().splitlines()
    assert line.startswith(f"gateway-harness fuzz: error: {flag}") and message in line, line
