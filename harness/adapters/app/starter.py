"""The world's client starter for an unmodified app (``mode.AppAdapter``).

The app runs as any third-party client process does (``harness.world_clients.adapter_starter``:
its own process group, deadline, stderr tail, PR1), with Discord's hostnames redirected on top
of its environment (``mode.app_env``). Afterwards the hooks' log says whether it was redirected
at all (``mode.app_problem``: the run's error if not) and what was redirected (in the report).
"""

from __future__ import annotations

import os
from dataclasses import replace

import trio

from harness.adapters.app.hosts import read_redirect_log
from harness.adapters.app.mode import REDIRECT_LOG, AppAdapter, app_env, app_problem, app_summary
from harness.client_env import ClientEnv, ClientOutcome, ClientStarter, ClientStop
from harness.world_clients import adapter_starter


def app_starter(adapter: AppAdapter) -> ClientStarter:
    async def start(nursery: trio.Nursery, env: ClientEnv) -> ClientStop:
        if env.rest_url is None or env.log_dir is None:
            raise ValueError("app mode needs the world's REST listener and a log folder")
        log_dir = env.log_dir
        # The contract's variables still come on top (an app may honour the delivery log);
        # env.ca_file is app_tls's bundle, so SSL_CERT_FILE keeps the system's roots.
        redirected = app_env(env.rest_url, env.gateway_url, env.resume_url, env.ca_file, log_dir,
                             base={**_harness_env(), **adapter.env})
        stop = await adapter_starter(replace(adapter, env=redirected))(nursery, env)

        async def stop_app() -> ClientOutcome:
            outcome = await stop()
            log = read_redirect_log(log_dir / REDIRECT_LOG)
            outcome.error = outcome.error or app_problem(log, adapter.argv[0],
                                                         outcome.crash)
            outcome.stderr_tail += f"\n[gateway-harness: {app_summary(log)}]"
            outcome.info["redirect_log"] = log
            return outcome

        return stop_app

    return start


def _harness_env() -> dict[str, str]:
    """This process's environment without its own GATEWAY_HARNESS_* settings, as
    ``ClientProcess`` passes it on (the app's PYTHONPATH, NODE_OPTIONS, proxies are kept)."""
    return {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_HARNESS_")}
