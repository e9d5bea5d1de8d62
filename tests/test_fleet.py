"""The fleet storm: many reference-client shards against one gateway in simulation, with op 7
waves, 4009 waves and a gateway restart, identify buckets respected throughout."""

from __future__ import annotations

import pytest

from gateway_common.errors import UserError
from harness.cli import main
from harness.fleet import FleetConfig, IdentifyQueue, run_fleet


def test_identify_queue_gives_each_bucket_one_slot_per_window() -> None:
    queue = IdentifyQueue(max_concurrency=2, window=5.0, margin=0.0)
    # shards 0, 2, 4 share bucket 0; 1, 3 share bucket 1
    assert [queue.reserve(s, 0.0) for s in (0, 1, 2, 3, 4)] == [0.0, 0.0, 5.0, 5.0, 10.0]
    assert queue.reserve(1, 30.0) == 30.0  # a late request gets its slot at once


def test_a_storm_recovers_every_shard_within_the_identify_buckets() -> None:
    report = run_fleet(FleetConfig(shards=12, max_concurrency=3, seed=2, wave_gap=10.0))
    phases = {p.name: p for p in report.phases}
    assert list(phases) == ["start", "reconnect", "close-4009", "restart"]
    assert report.stopped_shards == 0
    for phase in report.phases:
        assert phase.all_ready_after is not None, phase
        assert phase.max_accepted_per_window <= 3
        assert phase.identify_rejections == 0
    # start: 12 shards / 3 buckets = 4 windows of 5 s
    assert phases["start"].identifies_accepted == 12
    assert phases["start"].identifies_per_window == [3, 3, 3, 3]
    assert phases["start"].all_ready_after == pytest.approx(15.15, abs=0.5)
    # op 7 to everyone: every shard RESUMEs, nobody IDENTIFYs
    assert phases["reconnect"].resumes == 12 and phases["reconnect"].identifies_sent == 0
    # 4009 to everyone: every shard must start a new session, through the buckets again
    assert phases["close-4009"].identifies_accepted == 12
    assert (phases["close-4009"].all_ready_after or 0.0) >= 15.0
    # a restarted gateway lost every session: resumes fail, every shard re-IDENTIFYs
    assert phases["restart"].identifies_accepted == 12


def test_without_a_shared_identify_queue_shards_collide_in_their_buckets() -> None:
    report = run_fleet(FleetConfig(shards=12, max_concurrency=3, seed=2, waves=(),
                                   coordinated=False))
    start = report.phases[0]
    assert start.identify_rejections > 0  # op 9 answers to IDENTIFYs over the bucket limit
    assert start.identifies_sent > start.identifies_accepted
    assert start.max_accepted_per_window <= 3  # the gateway still enforces the buckets


def test_bad_fleet_settings_are_user_errors(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(UserError, match="wave"):
        FleetConfig(waves=("tsunami",))
    assert main(["storm", "--shards", "0"]) == 2
    assert "shards" in capsys.readouterr().err
