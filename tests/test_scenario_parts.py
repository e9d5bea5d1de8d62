"""Every built-in scenario is accepted by the parts that execute it: the fake gateway's config and
controls, and the fault engine's toxic builder (the same checks the Toxiproxy API applies); the
``[gateway]`` table is GatewayConfig's knob table, key for key."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest

from fake_gateway.config import SCENARIO_KNOBS, GatewayConfig, KnobField, scenario_config
from fake_gateway.controls import validate
from gateway_common.errors import UserError
from harness.faults.toxics import build_toxic
from harness.scenario import (
    GatewayKnobs,
    builtin_scenarios_dir,
    load_scenario,
    parse_scenario,
    scenario_files,
    scenario_to_toml,
)

FILES = [
    p
    for d in (builtin_scenarios_dir(), builtin_scenarios_dir() / "extended")
    for p in scenario_files([d])
]
MINIMAL = '''\
name = "knobs"
source = "seed"
description = "A scenario that only sets gateway knobs, to check the loader."

[gateway]
{knobs}

[expect]
recovery_bound = 3.0
duration = 6.0
'''


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_builtin_scenario_is_executable_by_gateway_and_fault_engine(path):
    scenario = load_scenario(path)
    assert GatewayConfig(**scenario.gateway.config_overrides()) == scenario.gateway.config
    for step in scenario.steps:
        if step.kind == "control":
            params = validate(step.action or "", step.conn_target, dict(step.params))
            assert params is not None
        elif step.kind == "toxic":
            toxic = build_toxic(step.toxic_json())
            assert toxic.name == step.name


def _other_value(k: KnobField) -> Any:
    """A valid value for the knob that is not its scenario default."""
    if k.type is bool:
        return not k.scenario_default
    if k.knob.choices:
        return next(c for c in k.knob.choices if c != k.scenario_default)
    if k.knob.maximum is not None and k.scenario_default == k.knob.maximum:
        return k.type(k.knob.maximum - 1)
    return k.type(k.scenario_default + 1)


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return f'"{value}"' if isinstance(value, str) else repr(value)


@pytest.mark.parametrize("key", list(SCENARIO_KNOBS))
def test_every_scenario_knob_sets_its_gateway_config_field_and_writes_back(key: str, tmp_path):
    k = SCENARIO_KNOBS[key]
    value = _other_value(k)
    scenario = parse_scenario(MINIMAL.format(knobs=f"{key} = {_toml(value)}"), tmp_path / "k.toml")
    assert getattr(scenario.gateway.config, k.name) == value
    assert GatewayConfig(**scenario.gateway.config_overrides()) == scenario_config(
        **{k.name: value})
    written = scenario_to_toml(scenario)
    assert f"{key} = " in written
    assert parse_scenario(written, tmp_path / "k.toml") == scenario
    # Left out, the knob has its scenario default, and the writer leaves it out too.
    default = parse_scenario(MINIMAL.format(knobs=""), tmp_path / "k.toml")
    assert getattr(default.gateway.config, k.name) == k.scenario_default
    assert f"{key} = " not in scenario_to_toml(default)


@pytest.mark.parametrize("key", list(SCENARIO_KNOBS))
def test_every_scenario_knob_refuses_a_wrong_type_naming_the_field(key: str, tmp_path):
    wrong = '"x"' if SCENARIO_KNOBS[key].type is not str else "1"
    text = MINIMAL.format(knobs=f"{key} = {wrong}")
    with pytest.raises(UserError, match=rf"k.toml:6: gateway.{key}: "):
        parse_scenario(text, tmp_path / "k.toml")


@pytest.mark.parametrize("key", [key for key, k in SCENARIO_KNOBS.items()
                                 if k.knob.minimum is not None or k.knob.maximum is not None])
def test_every_scenario_knob_refuses_values_out_of_its_range(key: str, tmp_path):
    k = SCENARIO_KNOBS[key]
    bad = k.knob.minimum - 1 if k.knob.minimum is not None else (k.knob.maximum or 0) + 1
    text = MINIMAL.format(knobs=f"{key} = {_toml(k.type(bad))}")
    with pytest.raises(UserError, match=rf"gateway.{key}: must be at (least|most)"):
        parse_scenario(text, tmp_path / "k.toml")


def test_the_readme_shows_every_gateway_knob_at_its_scenario_default():
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    section = readme.split("## Scenario files", 1)[1]
    example = section.split("```toml\n", 1)[1].split("```", 1)[0]
    table = example.split("[gateway]", 1)[1].split("\n[", 1)[0]
    shown = tomllib.loads(table)
    knobs = GatewayKnobs()
    expected = {key: getattr(knobs.config, k.name) for key, k in SCENARIO_KNOBS.items()}
    expected.update(tls=knobs.tls, compression=knobs.compression, encoding=knobs.encoding)
    assert shown == expected
