"""The adapter registry: names, pins, version selection and install errors a user can cause."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway_common.errors import UserError
from harness.adapters.registry import ADAPTERS, SHIMS_DIR, get_spec, resolve

pytestmark = pytest.mark.timeout(120)


def test_the_seven_built_in_clients_are_pinned_and_have_their_shims() -> None:
    assert sorted(ADAPTERS) == sorted(
        ["discord.py", "hikari", "nextcord", "disnake", "py-cord", "discord.js", "midjourney"]
    )
    for spec in ADAPTERS.values():
        assert (SHIMS_DIR / spec.shim).is_file(), spec.name
        assert spec.version[0].isdigit(), spec.name
    # only midjourney ignores HELLO's interval; the runner gives it the real 41.25 s one
    assert [s.name for s in ADAPTERS.values() if not s.honours_hello_interval] == ["midjourney"]


def test_unknown_client_names_the_built_in_ones() -> None:
    with pytest.raises(UserError, match=r"unknown client 'discrod.py'; built-in clients: disc"):
        resolve("discrod.py")


def test_another_version_gets_its_own_directory(tmp_path: Path) -> None:
    spec = get_spec("discord.py")
    assert spec.install_dir("2.6.0", tmp_path) != spec.install_dir(None, tmp_path)
    assert spec.requirement("2.6.0") == "discord.py==2.6.0"
    assert get_spec("discord.js").requirement() == "discord.js@14.28.1"


def test_a_version_that_does_not_exist_is_a_one_line_user_error(tmp_path: Path) -> None:
    with pytest.raises(UserError) as info:
        resolve("discord.py@0.0.0.404", clients_dir=tmp_path)
    message = str(info.value)
    assert message.startswith("client discord.py: ")
    assert "\n" not in message
    assert "0.0.0.404" in message
    # nothing half-installed is left behind or taken for an install next time
    assert not get_spec("discord.py").is_installed("0.0.0.404", tmp_path)
    assert not get_spec("discord.py").install_dir("0.0.0.404", tmp_path).exists()
