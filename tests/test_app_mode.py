"""App mode (issue 18): an unmodified bot, with its own token and Discord's own URLs, run against
the harness (`validate --app`, the `gateway_app` fixture, `RunOptions(adapter=app_adapter(...))`).

The gateway part (fast): the fake takes the app's own token and traces it redacted, and answers a
REST call it does not implement with Discord's 404 JSON, in the trace. The run part: a ten-line
discord.py bot gets the built-in discord.py adapter's verdicts, scenario by scenario; hikari and
discord.js bots log in and resume through the redirect; a few lines of Node with the npm
`midjourney` package at its default URLs reproduce the seed; a command that never loads the hook
is the run's error, in one line. Real clients install on first use (conftest's install_client:
once per machine into .clients/).
"""

from __future__ import annotations

import json
import random
import re
import ssl
import subprocess
import sys
import textwrap
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from fake_gateway.config import GatewayConfig
from fake_gateway.opened import OpenedGateway, open_gateway
from fake_gateway.server import FakeGateway
from fake_gateway.testing import raw_client
from fake_gateway.tls import make_tls
from gateway_common.trace import Trace
from harness.scenario import builtin_scenarios_dir, load_scenario

pytestmark = pytest.mark.timeout(600)

APP_TOKEN = "MTIzNDU2Nzg5MDEyMzQ1Njc4.Gabcde.the-apps-own-secret-signature-0123456789"
SHOWN = "'MTIzND'... (72 chars)"  # how the trace shows APP_TOKEN


async def _open(nursery: trio.Nursery, tmp_path: Path, **config: Any
                ) -> tuple[FakeGateway, OpenedGateway]:
    gateway = FakeGateway(GatewayConfig(heartbeat_deadline=False, **config),
                          Trace(clock=trio.current_time), random.Random(1))
    opened = await nursery.start(partial(open_gateway, gateway, tls=make_tls(tmp_path / "tls"),
                                         rest_port=0))
    return gateway, opened


# ---- the gateway takes the app's token -----------------------------------------------------


async def test_the_gateway_takes_the_apps_own_token_and_traces_it_redacted(
        nursery: trio.Nursery, tmp_path: Path) -> None:
    assert len(APP_TOKEN) == 72
    gateway, opened = await _open(nursery, tmp_path, accept_any_token=True)
    async with raw_client(opened.gateway_url, ca_file=opened.ca_file) as client:
        await client.recv_op(10)
        ready = await client.identify(APP_TOKEN)
        await client.close(4000)  # keeps the session resumable
    session_id = ready["d"]["session_id"]
    async with raw_client(opened.resume_listener_url, ca_file=opened.ca_file) as client:
        await client.recv_op(10)
        await client.resume(APP_TOKEN, session_id, ready["s"])
        await client.recv_dispatch("RESUMED")
        await client.close()
    records = gateway.trace.records
    logins = [r for r in records if r["kind"] == "frame_in" and r["op"] in (2, 6)]
    assert [(r["op"], r["token_ok"], r["token_seen"]) for r in logins] == [
        (2, True, SHOWN), (6, True, SHOWN)]
    assert any(r["kind"] == "note" and SHOWN in r["text"] for r in records)
    assert APP_TOKEN[6:] not in json.dumps(records)  # never more than the first 6 characters


async def test_a_resume_with_another_token_is_taken_but_not_ok(
        nursery: trio.Nursery, tmp_path: Path) -> None:
    """The first token the app presented is its token: RS2 judges a RESUME that changes it."""
    gateway, opened = await _open(nursery, tmp_path, accept_any_token=True)
    async with raw_client(opened.gateway_url, ca_file=opened.ca_file) as client:
        await client.recv_op(10)
        ready = await client.identify(APP_TOKEN)
        await client.close(4000)
    async with raw_client(opened.resume_listener_url, ca_file=opened.ca_file) as client:
        await client.recv_op(10)
        await client.resume("another-token-entirely", ready["d"]["session_id"], ready["s"])
        await client.recv_dispatch("RESUMED")
        await client.close()
    resume = [r for r in gateway.trace.records if r["kind"] == "frame_in" and r["op"] == 6]
    assert [r["token_ok"] for r in resume] == [False]


async def test_without_app_mode_another_token_is_closed_4004(
        nursery: trio.Nursery, tmp_path: Path) -> None:
    gateway, opened = await _open(nursery, tmp_path)
    async with raw_client(opened.gateway_url, ca_file=opened.ca_file) as client:
        await client.recv_op(10)
        await client.send({"op": 2, "d": {"token": APP_TOKEN, "intents": 513,
                                          "properties": {"os": "linux"}}})
        assert await client.expect_close() == 4004
    identify = [r for r in gateway.trace.records if r["kind"] == "frame_in" and r["op"] == 2]
    assert identify[0]["token_ok"] is False and "token_seen" not in identify[0]


# ---- REST: the app's token, and Discord's 404 for the rest ---------------------------------


async def test_rest_takes_the_apps_token_and_answers_unknown_calls_with_discords_404(
        nursery: trio.Nursery, tmp_path: Path) -> None:
    gateway, opened = await _open(nursery, tmp_path, accept_any_token=True)
    auth = {"Authorization": f"Bot {APP_TOKEN}"}
    context = ssl.create_default_context(cafile=opened.ca_file)
    async with httpx.AsyncClient(verify=context, base_url=str(opened.rest_url)) as http:
        me = await http.get("/users/@me", headers=auth)
        unknown = await http.post("/channels/42/messages", headers=auth, json={"content": "hi"})
        no_token = await http.get("/users/@me")
    assert me.status_code == 200 and me.json()["bot"] is True
    assert unknown.status_code == 404
    assert unknown.json() == {"message": "404: Not Found", "code": 0}
    assert unknown.headers["content-type"] == "application/json"
    assert no_token.status_code == 401
    rest = [(r["method"], r["path"], r["status"], r["implemented"])
            for r in gateway.trace.records if r["kind"] == "rest"]
    assert rest == [("GET", "/api/v10/users/@me", 200, True),
                    ("POST", "/api/v10/channels/42/messages", 404, False),
                    ("GET", "/api/v10/users/@me", 401, True)]


# ---- a run in app mode ---------------------------------------------------------------------

# A bot that knows nothing of the harness: Discord's URLs, its own token, urllib and websockets
# (whatever a Python app has). It asks for one REST route the fake does not implement.
PLAIN_APP = r'''
import json, time, urllib.error, urllib.request
from websockets.sync.client import connect

TOKEN = "MTIzNDU2Nzg5MDEyMzQ1Njc4.Gabcde.the-apps-own-secret-signature-0123456789"


def rest(path):
    request = urllib.request.Request("https://discord.com/api/v10" + path,
                                     headers={"Authorization": "Bot " + TOKEN})
    try:
        with urllib.request.urlopen(request) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as error:
        return error.code, json.load(error)


print(json.dumps({"pins": rest("/channels/1/pins")}), flush=True)
url = rest("/gateway/bot")[1]["url"]
with connect(url + "/?v=10&encoding=json") as ws:
    interval = json.loads(ws.recv())["d"]["heartbeat_interval"] / 1000
    ws.send(json.dumps({"op": 2, "d": {"token": TOKEN, "intents": 513,
                                       "properties": {"os": "linux", "browser": "app",
                                                      "device": "app"}}}))
    seq, beat_at = None, time.monotonic() + interval
    while True:
        try:
            payload = json.loads(ws.recv(timeout=max(0.0, beat_at - time.monotonic())))
        except TimeoutError:
            ws.send(json.dumps({"op": 1, "d": seq}))
            beat_at += interval
            continue
        seq = payload["s"] if payload.get("s") is not None else seq
'''


def _client_dir(result: Any) -> Path:
    return result.trace_path.with_name(result.trace_path.name.replace(".trace.jsonl", ".client"))


def test_a_plain_python_app_runs_unmodified_against_discords_urls(
        gateway_app: Any, tmp_path: Path) -> None:
    (tmp_path / "bot.py").write_text(PLAIN_APP)
    result = gateway_app(f"{sys.executable} bot.py", "baseline-steady", cwd=tmp_path)
    assert result.outcome == "PASS", (result.error, result.stderr_tail)
    assert result.client == "bot.py"
    records = result.records
    # /gateway/bot announced Discord's gateway, which the redirect took to the discovery proxy
    assert any(r["kind"] == "conn_open" and r["listener"] == "discovery" for r in records)
    identify = [r for r in records if r["kind"] == "frame_in" and r["op"] == 2]
    assert [(r["token_ok"], r["token_seen"]) for r in identify] == [(True, SHOWN)]
    # the call the fake lacks: Discord's 404 JSON for the app, a `rest` record in the trace
    printed = (_client_dir(result) / "stdout.log").read_text().splitlines()
    assert json.loads(printed[0]) == {"pins": [404, {"message": "404: Not Found", "code": 0}]}
    assert [(r["method"], r["path"], r["status"]) for r in records
            if r["kind"] == "rest" and not r["implemented"]] == [
        ("GET", "/api/v10/channels/1/pins", 404)]
    assert "redirected: discord.com, gateway.discord.gg" in result.stderr_tail


def test_validate_app_names_a_program_the_hook_cannot_reach_in_one_line(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from harness.cli import main

    scenario = str(builtin_scenarios_dir() / "baseline-steady.toml")
    code = main(["validate", "--app", "sh -c 'echo a shell script'", scenario,
                 "--out", str(tmp_path), "--json", str(tmp_path / "r.json")])
    out = capsys.readouterr().out
    assert code == 1
    [entry] = json.loads((tmp_path / "r.json").read_text())["scenarios"]
    assert entry["outcome"] == "ERROR" and "\n" not in entry["error"]
    assert entry["error"].startswith("the app never loaded the redirect hook: is 'sh' a Python "
                                     "or Node.js program")
    assert entry["error"] in out


def test_an_app_that_exits_before_connecting_says_so(gateway_app: Any) -> None:
    result = gateway_app(f"{sys.executable} -c 'import sys; sys.exit(3)'")
    assert result.outcome == "ERROR"
    assert result.error.startswith(f"the app (python {sys.version.split()[0]}) ended before it "
                                   "connected to the gateway: ")
    assert "exited on its own with code 3" in result.error



def test_the_readme_starts_test_your_own_bot_with_one_command_and_lists_every_name() -> None:
    from harness.adapters.app.hosts import describe_hosts

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    section = readme.split("\n## Test your own bot\n", 1)[1].split("\n## ", 1)[0]
    first = section.strip().split("\n\n", 1)[0]
    assert first == "```sh\ngateway-harness validate --app 'python bot.py'\n```"
    assert describe_hosts() in section  # the hostnames the redirect covers, as the code has them


# ---- fuzz --app ------------------------------------------------------------------------------

def test_fuzz_app_is_wall_clock_and_one_client(capsys: pytest.CaptureFixture[str]) -> None:
    from harness.cli import main

    assert main(["fuzz", "--app", "python bot.py", "--command", "python other.py"]) == 2
    assert "--command and --app: give one" in capsys.readouterr().err
    assert main(["fuzz", "--app", "python bot.py", "--mode", "sim"]) == 2
    assert "--mode sim: --app's client runs in wall-clock mode only" in capsys.readouterr().err


# A finding an earlier campaign kept: the live connection reset 1 s after READY. The plain app
# has no reconnect logic, so it dies; the reference client resumes.
KNOWN_RESET = """\
name = "known-reset"
source = "generated"
tags = ["fuzz", "wallclock"]
description = "The live connection reset soon after READY."
seed = 1

[gateway]
tls = true

[expect]
recovery_bound = 3.0
duration = 6.0

[[steps]]
name = "f1"
kind = "control"
action = "reset"
target = "all"
start = { after = "ready", delay = 1.0 }
"""


@pytest.mark.slow
def test_fuzz_app_finds_that_a_bot_without_reconnect_logic_dies_on_a_reset(
        tmp_path: Path) -> None:
    app, out, db = tmp_path / "app", tmp_path / "out", tmp_path / "db"
    app.mkdir()
    (app / "bot.py").write_text(PLAIN_APP)
    (db / "wallclock" / "plainbot").mkdir(parents=True)
    (db / "wallclock" / "plainbot" / "known-reset.toml").write_text(KNOWN_RESET)
    done = subprocess.run(
        [sys.executable, "-m", "harness", "fuzz", "--app", f"{sys.executable} bot.py", "--name",
         "plainbot", "--examples", "1", "--seed", "1", "--faults", "reset", "--max-faults", "1",
         "--confirm", "1", "--jobs", "2", "--database", str(db), "--out", str(out)],
        cwd=app, capture_output=True, text=True, timeout=500)
    assert done.returncode == 1, done.stdout + done.stderr  # a finding
    # it never comes back (LV1) because it died (PR1); the reference client resumes
    assert re.search(r"^FAIL (LV1|PR1) .*the reference client passes it", done.stdout, re.M)
    assert (f"replay:   gateway-harness validate --app '{sys.executable} bot.py' --name plainbot"
            in done.stdout)
    bundle = next(p for p in out.iterdir() if p.is_dir())
    [found] = (bundle / "runs" / "found").glob("*.trace.jsonl")
    records = [json.loads(line) for line in found.read_text().splitlines()]
    assert {r["token_seen"] for r in records if r.get("kind") == "frame_in" and r["op"] == 2} == {
        SHOWN}  # the app ran in app mode, with its own token

# ---- real libraries: the same verdicts as their built-in adapters (slow: installs, 75 s seed) --

# Each bot as its README shows it: its own token, no harness anywhere.
BOTS = {
    "discord.py": ("bot.py", f"""
import discord

client = discord.Client(intents=discord.Intents.default())


@client.event
async def on_ready():
    print(f"logged in as {{client.user}}", flush=True)


client.run("{APP_TOKEN}")
"""),
    "hikari": ("bot.py", f"""
import hikari

bot = hikari.GatewayBot(token="{APP_TOKEN}")


@bot.listen()
async def on_started(event: hikari.StartedEvent) -> None:
    print("bot started", flush=True)


bot.run()
"""),
    "discord.js": ("bot.js", f"""
const {{ Client, Events, GatewayIntentBits }} = require('discord.js');

const client = new Client({{ intents: [GatewayIntentBits.Guilds] }});
client.once(Events.ClientReady, (ready) => console.log(`ready as ${{ready.user.tag}}`));
client.login('{APP_TOKEN}');
"""),
    # ChatGPT-Midjourney's way: the npm client at its default URLs (discord.com, and
    # wss://gateway.discord.gg for every reconnect); a Next.js server keeps the process up and
    # logs what nobody handles.
    "midjourney": ("bot.js", """
const { Midjourney } = require('midjourney');

const client = new Midjourney({
  ServerId: '1100000000000000001',
  ChannelId: '1100000000000000002',
  SalaiToken: 'my-own-salai-user-token-that-the-harness-never-saw',
  Ws: true,
});
client.init().then(() => console.log('midjourney client ready'));
process.on('uncaughtException', (error) => console.error('uncaught:', error.message));
setInterval(() => {}, 1 << 30);
"""),
}


def _write_bot(lib: str, adapter: Any, where: Path) -> str:
    """The bot in its own folder (as in its project), and the command that runs it."""
    filename, source = BOTS[lib]
    where.mkdir(parents=True, exist_ok=True)
    (where / filename).write_text(textwrap.dedent(source).lstrip())
    if filename.endswith(".js"):  # the project's node_modules
        (where / "node_modules").symlink_to(adapter.env["NODE_PATH"])
        return f"node {filename}"
    return f"{adapter.argv[0]} {filename}"  # the interpreter its library is installed in


def _builtin(scenario: Any, adapter: Any, out: Path) -> Any:
    from harness.world import RunOptions, run_scenario

    return run_scenario(scenario, RunOptions(mode="real", client=adapter.name, adapter=adapter,
                                             out_dir=out))


def _statuses(result: Any) -> dict[str, str]:
    return {v.invariant: v.status for v in result.verdicts}


@pytest.mark.slow
@pytest.mark.parametrize("scenario", ["baseline-steady", "f15-resume-stays-up"])
@pytest.mark.parametrize("lib", ["discord.py", "hikari", "discord.js"])
def test_a_bot_that_knows_nothing_of_the_harness_gets_its_librarys_verdicts(
        lib: str, scenario: str, install_client: Any, gateway_app: Any, tmp_path: Path) -> None:
    adapter = install_client(lib)
    command = _write_bot(lib, adapter, tmp_path / "bot")
    loaded = load_scenario(builtin_scenarios_dir() / f"{scenario}.toml")
    builtin = _builtin(loaded, adapter, tmp_path / "builtin")
    app = gateway_app(command, loaded, cwd=tmp_path / "bot")
    assert app.error is None, app.stderr_tail
    assert app.outcome == builtin.outcome == "PASS", (app.stderr_tail, builtin.stderr_tail)
    # verdict by verdict, but RS3: the shim writes a delivery log, the unmodified bot does not
    mine, theirs = _statuses(app), _statuses(builtin)
    assert mine.pop("RS3") == "not_judged" and theirs.pop("RS3") in ("pass", "not_judged")
    assert mine == theirs
    logins = [r for r in app.records if r["kind"] == "frame_in" and r["op"] in (2, 6)]
    assert logins and {r["token_seen"] for r in logins} == {SHOWN}
    if scenario == "f15-resume-stays-up":  # READY's resume URL led through the resume proxy
        resume = [r for r in logins if r["op"] == 6]
        opened = {r["conn"]: r["listener"] for r in app.records if r["kind"] == "conn_open"}
        assert [opened[r["conn"]] for r in resume] == ["resume"]


@pytest.mark.slow
def test_the_midjourney_app_at_its_default_urls_reproduces_the_seed(
        install_client: Any, gateway_app: Any, tmp_path: Path) -> None:
    """The seed suite, 75 s (the client beats on its own 41.25 s clock): like the built-in
    midjourney adapter, the app never becomes live again after its reconnect is reset in TLS."""
    from concurrent.futures import ThreadPoolExecutor

    from harness.adapters.suite import VALIDATION_DIR
    from harness.scenario import load_scenarios

    adapter = install_client("midjourney")
    command = _write_bot("midjourney", adapter, tmp_path / "app")
    [seed] = load_scenarios([VALIDATION_DIR / "seed"], [])
    with ThreadPoolExecutor(2) as pool:  # side by side: both wait on the same 75 s
        builtin = pool.submit(_builtin, seed, adapter, tmp_path / "builtin")
        app = pool.submit(gateway_app, command, seed, cwd=tmp_path / "app",
                          ignores_hello_interval=True)
        builtin_result, app_result = builtin.result(), app.result()
    assert app_result.error is None, app_result.stderr_tail
    assert builtin_result.failed_invariants == app_result.failed_invariants == ["LV1"]
    lv1 = next(v for v in app_result.verdicts if v.invariant == "LV1")
    assert "never became live again" in lv1.evidence
    # every reconnect went to wss://gateway.discord.gg, i.e. through the discovery proxy
    opened = [r["listener"] for r in app_result.records if r["kind"] == "conn_open"]
    assert len(opened) >= 2 and set(opened) == {"discovery"}
