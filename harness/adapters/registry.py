"""The built-in adapters: real client libraries from their registries, each with a small shim.

Each adapter installs its library, pinned, into an isolated environment under the clients
directory (``$GATEWAY_HARNESS_CLIENTS_DIR``, default ``.clients/`` in the current directory):
a venv per Python client, ``node_modules`` per npm client. The first use installs; later uses
find the ``installed.json`` marker and reuse it. Another version is one argument away
(``install(version="2.6.0")`` or ``NAME@VERSION`` in ``resolve``) and lives beside the pinned one.

The shims (``harness/adapters/shims/``) read the contract's environment, point the library at
the harness, and write the delivery log. They are plain scripts run by the client's own
interpreter; they never import the harness.

Installing is blocking (pip, npm). From trio, call it with ``trio.to_thread.run_sync``.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from gateway_common.errors import UserError
from harness.adapters.contract import Adapter

SHIMS_DIR = Path(__file__).parent / "shims"
ENV_CLIENTS_DIR = "GATEWAY_HARNESS_CLIENTS_DIR"
ENV_CLIENT_PYTHON = "GATEWAY_HARNESS_CLIENT_PYTHON"
_MARKER = "installed.json"

Ecosystem = Literal["pypi", "npm"]


@dataclass(frozen=True)
class AdapterSpec:
    """One built-in client: which package, which version, which shim, how it heartbeats."""

    name: str
    ecosystem: Ecosystem
    package: str
    version: str
    shim: str
    description: str
    honours_hello_interval: bool = True
    # Pinned companions installed alongside (e.g. an exact aiohttp is NOT pinned: the library's
    # own constraints pick it, as they would for a user).
    extra_requirements: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)

    def requirement(self, version: str | None = None) -> str:
        v = version or self.version
        return f"{self.package}=={v}" if self.ecosystem == "pypi" else f"{self.package}@{v}"

    def install_dir(self, version: str | None = None, clients_dir: Path | None = None) -> Path:
        base = clients_dir if clients_dir is not None else default_clients_dir()
        tag = f"py{sys.version_info[0]}{sys.version_info[1]}" if self.ecosystem == "pypi" else "npm"
        return base / f"{self.name}-{version or self.version}-{tag}"

    def install(
        self,
        version: str | None = None,
        clients_dir: Path | None = None,
        *,
        log: Path | None = None,
    ) -> Adapter:
        """Install (first use) or reuse this client; return the runnable ``Adapter``."""
        version = version or self.version
        target = self.install_dir(version, clients_dir)
        target.parent.mkdir(parents=True, exist_ok=True)
        with _locked(target.parent / f".{target.name}.lock"):
            marker = target / _MARKER
            if not marker.exists():
                if target.exists():  # a half-finished earlier attempt
                    shutil.rmtree(target)
                started = time.monotonic()
                try:
                    versions = self._install_into(target, version, log)
                except BaseException:
                    shutil.rmtree(target, ignore_errors=True)
                    raise
                info = {
                    "requirement": self.requirement(version),
                    "versions": versions,
                    "install_seconds": round(time.monotonic() - started, 1),
                }
                marker.write_text(json.dumps(info, indent=2) + "\n")
            info = json.loads(marker.read_text())
        return self._adapter(target, dict(info["versions"]))

    def is_installed(self, version: str | None = None, clients_dir: Path | None = None) -> bool:
        return (self.install_dir(version, clients_dir) / _MARKER).exists()

    def _adapter(self, target: Path, versions: dict[str, str]) -> Adapter:
        shim = SHIMS_DIR / self.shim
        env = dict(self.env)
        if self.ecosystem == "pypi":
            argv: tuple[str, ...] = (str(target / "bin" / "python"), "-u", str(shim))
            env.update({"PYTHONPATH": "", "PYTHONNOUSERSITE": "1", "PYTHONUNBUFFERED": "1"})
        else:
            node = shutil.which("node")
            if node is None:
                raise UserError(f"client {self.name}: `node` not found on PATH (Node.js >= 18)")
            argv = (node, str(shim))
            env["NODE_PATH"] = str(target / "node_modules")  # shims live outside target
        return Adapter(
            name=self.name,
            argv=argv,
            env=env,
            versions=versions,
            honours_hello_interval=self.honours_hello_interval,
        )

    def _install_into(self, target: Path, version: str, log: Path | None) -> dict[str, str]:
        requirement = self.requirement(version)
        if self.ecosystem == "pypi":
            python = os.environ.get(ENV_CLIENT_PYTHON) or sys.executable
            _run([python, "-m", "venv", str(target)], self.name, log)
            vpy = str(target / "bin" / "python")
            _run(
                [vpy, "-m", "pip", "install", "-q", "--disable-pip-version-check",
                 requirement, *self.extra_requirements],
                self.name,
                log,
            )
            report = _run(
                [vpy, "-c", "import importlib.metadata as m, json, platform, sys;"
                 f"print(json.dumps([m.version({self.package!r}), platform.python_version()]))"],
                self.name,
                log,
            )
            lib_version, py_version = json.loads(report.strip().splitlines()[-1])
            return {self.name: lib_version, "python": py_version}
        npm = shutil.which("npm")
        if npm is None:
            raise UserError(f"client {self.name}: `npm` not found on PATH (Node.js >= 18)")
        target.mkdir(parents=True)
        _run(
            [npm, "install", "--prefix", str(target), "--no-audit", "--no-fund",
             "--omit=dev", "--loglevel=error", requirement, *self.extra_requirements],
            self.name,
            log,
        )
        pkg = json.loads((target / "node_modules" / self.package / "package.json").read_text())
        node_version = _run(["node", "--version"], self.name, log).strip().lstrip("v")
        return {self.name: pkg["version"], "node": node_version}


def _run(argv: list[str], name: str, log: Path | None) -> str:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run(argv, capture_output=True, text=True, env=env)
    if log is not None:
        with open(log, "a", encoding="utf-8") as f:
            f.write(f"$ {' '.join(argv)}\n{proc.stdout}{proc.stderr}")
    if proc.returncode != 0:
        lines = [
            line for line in (proc.stderr or proc.stdout).strip().splitlines()
            if line.strip() and "complete log of this run" not in line
        ]
        reason = lines[-1] if lines else "(no output)"
        raise UserError(f"client {name}: `{' '.join(argv[:3])} ...` failed: {reason}")
    return proc.stdout


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Serialise installs of one client across processes (parallel test workers, two CLIs)."""
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def default_clients_dir() -> Path:
    return Path(os.environ.get(ENV_CLIENTS_DIR) or ".clients").resolve()


# Versions: the ones read and verified in the project's third-party client reference. For
# midjourney, 4.3.18 is what ChatGPT-Midjourney v3.2.3's package.json (^4.3.17) installs today;
# its yarn.lock had 4.3.12 (pick it with midjourney@4.3.12): the gateway code is the same, but
# 4.3.12 looks the /settings command up with a different REST call (channels/.../search).
ADAPTERS: dict[str, AdapterSpec] = {
    spec.name: spec
    for spec in (
        AdapterSpec(
            name="discord.py",
            ecosystem="pypi",
            package="discord.py",
            version="2.7.1",
            shim="discordpy_shim.py",
            description="discord.py Client; REST via Route.BASE, gateway via DEFAULT_GATEWAY",
        ),
        AdapterSpec(
            name="hikari",
            ecosystem="pypi",
            package="hikari",
            version="2.7.0",
            shim="hikari_shim.py",
            description="hikari GatewayBot; REST via rest_url, gateway from GET /gateway/bot",
        ),
        AdapterSpec(
            name="nextcord",
            ecosystem="pypi",
            package="nextcord",
            version="2.6.0",
            shim="discordpy_fork_shim.py",
            description="nextcord Client; REST via Route.BASE, gateway from GET /gateway",
            env={"GATEWAY_HARNESS_SHIM_LIB": "nextcord"},
        ),
        AdapterSpec(
            name="disnake",
            ecosystem="pypi",
            package="disnake",
            version="2.12.2",
            shim="discordpy_fork_shim.py",
            description="disnake Client; REST via Route.BASE, gateway from GET /gateway/bot",
            env={"GATEWAY_HARNESS_SHIM_LIB": "disnake"},
        ),
        AdapterSpec(
            name="py-cord",
            ecosystem="pypi",
            package="py-cord",
            version="2.8.1",
            shim="discordpy_fork_shim.py",
            description="py-cord Client; REST via Route.API_BASE_URL, gateway from GET /gateway",
            env={"GATEWAY_HARNESS_SHIM_LIB": "py-cord"},
        ),
        AdapterSpec(
            name="discord.js",
            ecosystem="npm",
            package="discord.js",
            version="14.28.1",
            shim="discordjs_shim.js",
            description="discord.js v14 Client; REST via rest.api, gateway from GET /gateway/bot",
        ),
        AdapterSpec(
            name="midjourney",
            ecosystem="npm",
            package="midjourney",
            version="4.3.18",
            shim="midjourney_shim.js",
            description="midjourney (erictik/zcpua) configured like ChatGPT-Midjourney v3.2.x",
            honours_hello_interval=False,  # heartbeats on its own fixed clock
        ),
    )
}


def get_spec(name: str) -> AdapterSpec:
    spec = ADAPTERS.get(name)
    if spec is None:
        known = ", ".join(ADAPTERS)
        raise UserError(f"unknown client {name!r}; built-in clients: {known}")
    return spec


def resolve(
    name_or_pin: str, version: str | None = None, clients_dir: Path | None = None
) -> Adapter:
    """``discord.py`` or ``discord.py@2.6.0`` -> an installed, runnable ``Adapter``."""
    name, _, pinned = name_or_pin.partition("@")
    spec = get_spec(name)
    return spec.install(version or pinned or None, clients_dir)
