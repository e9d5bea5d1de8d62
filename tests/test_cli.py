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
