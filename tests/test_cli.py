import subprocess
import sys


def test_cli_help_lists_subcommands():
    out = subprocess.run(
        [sys.executable, "-m", "harness", "--help"], capture_output=True, text=True, check=True
    ).stdout
    assert "gateway-harness" in out


def test_cli_without_command_exits_nonzero():
    proc = subprocess.run([sys.executable, "-m", "harness"], capture_output=True, text=True)
    assert proc.returncode == 2


def test_serve_prints_rest_url_as_the_api_base_the_client_takes(tmp_path):
    """What `serve` prints as rest_url, handed to `client --rest-url`, gets the client live."""
    import json
    import signal

    serve = subprocess.Popen(
        [sys.executable, "-m", "harness", "serve", "--tls", "--tls-dir", str(tmp_path),
         "--heartbeat-interval-ms", "500"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert serve.stdout is not None
        line = json.loads(serve.stdout.readline())
        assert line["rest_url"].endswith("/api/v10")
        assert line["api_url"] == line["rest_url"]  # the deprecated alias
        # The deadline only catches a hang; the client is live within about 1 s.
        client = subprocess.run(
            [sys.executable, "-m", "harness", "client", "--rest-url", line["rest_url"],
             "--token", line["token"], "--ca-file", line["ca_file"], "--show-state",
             "--run-for", "3"],
            capture_output=True, text=True, timeout=60)
    finally:
        serve.send_signal(signal.SIGINT)
        serve.wait(timeout=20)
    assert client.returncode == 0, client.stderr
    states = [text.split("]", 1)[1].split()[0] for text in client.stderr.splitlines()
              if text.startswith("[")]
    assert "ready" in states
