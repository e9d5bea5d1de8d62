"""Every built-in scenario is accepted by the parts that execute it: the fake gateway's config and
controls, and the fault engine's toxic builder (the same checks the Toxiproxy API applies)."""

from __future__ import annotations

import dataclasses

import pytest

from fake_gateway.config import GatewayConfig
from fake_gateway.controls import validate
from harness.faults.toxics import build_toxic
from harness.scenario import builtin_scenarios_dir, load_scenario, scenario_files

FILES = [
    p
    for d in (builtin_scenarios_dir(), builtin_scenarios_dir() / "extended")
    for p in scenario_files([d])
]


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_builtin_scenario_is_executable_by_gateway_and_fault_engine(path):
    scenario = load_scenario(path)
    config = GatewayConfig(**scenario.gateway.config_overrides())
    assert config.heartbeat_interval_ms == scenario.gateway.heartbeat_interval
    for step in scenario.steps:
        if step.kind == "control":
            params = validate(step.action or "", step.conn_target, dict(step.params))
            assert params is not None
        elif step.kind == "toxic":
            toxic = build_toxic(step.toxic_json())
            assert toxic.name == step.name


def test_every_knob_maps_onto_a_gateway_config_field():
    fields = {f.name for f in dataclasses.fields(GatewayConfig)}
    from harness.scenario import GatewayKnobs

    assert set(GatewayKnobs().config_overrides()) <= fields
