"""Impact analysis: the exact partition ranges a change reaches, and the one backfill of them."""

from __future__ import annotations

import dataclasses
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from ecm_assets.case_sla.datasets import DATASETS as CASE_SLA
from ecm_assets.cli import main
from ecm_assets.contracts.dataset import Column, Dataset, DatasetContract, Grain, Upstream
from ecm_assets.operations.graphql import (
    GraphQLError,
    backfill_status,
    launch_partition_backfill,
)
from ecm_assets.operations.impact import ImpactEntry, plan_impact

FAR = date(2030, 1, 1)
JUNE_15 = date(2026, 6, 15)
#: The case-SLA graph with partitions from 2026-01-01, so the arithmetic is shown mid-year.
DATASETS = tuple(
    dataclasses.replace(d, contract=dataclasses.replace(d.contract, start="2026-01-01"))
    for d in CASE_SLA
)


def _ranges(plan: list[ImpactEntry]) -> dict[str, tuple[str, str, int]]:
    return {e.asset: (e.first_key, e.last_key, e.partitions) for e in plan}


def test_a_change_of_one_day_reaches_the_windows_and_months_downstream() -> None:
    plan = plan_impact(DATASETS, "case_events", JUNE_15, JUNE_15, until=FAR)
    assert _ranges(plan) == {
        "case_events": ("2026-06-15", "2026-06-15", 1),
        # Metrics of day D read case_events D-29..D: June 15 is read through July 14.
        "case_sla_daily_metrics": ("2026-06-15", "2026-07-14", 30),
        "case_priority_mix_daily": ("2026-06-15", "2026-06-15", 1),
        # The rolling window spills over a second time: July 14 + 29 days.
        "case_sla_rolling_30d": ("2026-06-15", "2026-08-12", 59),
        # The monthly report reads the daily metrics of its month: June and July.
        "case_sla_monthly_report": ("2026-06-01", "2026-07-01", 2),
    }
    by_asset = {e.asset: e for e in plan}
    order = [e.asset for e in plan]
    assert order[0] == "case_events"
    assert order.index("case_sla_daily_metrics") < order.index("case_sla_rolling_30d")
    assert order.index("case_sla_daily_metrics") < order.index("case_sla_monthly_report")
    assert (by_asset["case_events"].depth, by_asset["case_events"].via) == (0, None)
    assert by_asset["case_events"].why == "changed"
    metrics = by_asset["case_sla_daily_metrics"]
    assert (metrics.depth, metrics.via, metrics.why) == (
        1,
        "case_events",
        "window spillover +29 days",
    )
    assert by_asset["case_priority_mix_daily"].why == "same dates"
    rolling = by_asset["case_sla_rolling_30d"]
    assert (rolling.depth, rolling.via) == (2, "case_sla_daily_metrics")
    monthly = by_asset["case_sla_monthly_report"]
    assert (monthly.grain, monthly.depth) == ("monthly", 2)
    assert monthly.why.startswith("months of 2026-06..2026-07")


def test_only_existing_partitions_are_planned() -> None:
    plan = plan_impact(DATASETS, "case_events", JUNE_15, JUNE_15, until=date(2026, 7, 20))
    assert _ranges(plan) == {
        "case_events": ("2026-06-15", "2026-06-15", 1),
        "case_sla_daily_metrics": ("2026-06-15", "2026-07-14", 30),
        "case_priority_mix_daily": ("2026-06-15", "2026-06-15", 1),
        "case_sla_rolling_30d": ("2026-06-15", "2026-07-20", 36),
        # July is not complete on July 20, so its monthly partition does not exist yet.
        "case_sla_monthly_report": ("2026-06-01", "2026-06-01", 1),
    }
    # A month exists once its last day is over.
    end_of_june = plan_impact(DATASETS, "case_events", JUNE_15, JUNE_15, until=date(2026, 6, 30))
    assert _ranges(end_of_june)["case_sla_monthly_report"] == ("2026-06-01", "2026-06-01", 1)
    assert _ranges(end_of_june)["case_sla_rolling_30d"] == ("2026-06-15", "2026-06-30", 16)
    june_29 = plan_impact(DATASETS, "case_events", JUNE_15, JUNE_15, until=date(2026, 6, 29))
    assert "case_sla_monthly_report" not in _ranges(june_29)
    # The changed range itself is clipped to the partitions that exist.
    clipped = plan_impact(
        DATASETS,
        "case_events",
        date(2025, 12, 30),
        date(2026, 1, 2),
        until=FAR,
        start=date(2026, 1, 1),
    )
    assert _ranges(clipped)["case_events"] == ("2026-01-01", "2026-01-02", 2)
    with pytest.raises(ValueError, match="exists yet"):
        plan_impact(DATASETS, "case_events", JUNE_15, JUNE_15, until=date(2026, 6, 14))


def test_each_contract_clips_to_its_own_partitions() -> None:
    """A change before a dataset's start plans only the partitions that exist (from 09-01)."""
    plan = plan_impact(CASE_SLA, "case_events", date(2026, 8, 30), date(2026, 9, 2), until=FAR)
    assert _ranges(plan)["case_events"] == ("2026-09-01", "2026-09-02", 2)
    assert _ranges(plan)["case_sla_monthly_report"] == ("2026-09-01", "2026-10-01", 2)
    ended = dataclasses.replace(
        CASE_SLA[0], contract=dataclasses.replace(CASE_SLA[0].contract, end="2026-09-10")
    )
    assert _ranges(plan_impact([ended], "case_events", date(2026, 9, 5), FAR, until=FAR)) == {
        "case_events": ("2026-09-05", "2026-09-10", 6)
    }
    with pytest.raises(ValueError, match=r"partitions daily 2026-09-01\.\.open end"):
        plan_impact(CASE_SLA, "case_events", JUNE_15, JUNE_15, until=FAR)


def test_a_downstream_change_does_not_reach_upstream() -> None:
    plan = plan_impact(
        DATASETS, "case_sla_daily_metrics", date(2026, 6, 30), date(2026, 7, 1), until=FAR
    )
    assert _ranges(plan) == {
        "case_sla_daily_metrics": ("2026-06-30", "2026-07-01", 2),
        "case_sla_rolling_30d": ("2026-06-30", "2026-07-30", 31),
        "case_sla_monthly_report": ("2026-06-01", "2026-07-01", 2),
    }
    monthly = plan_impact(
        DATASETS, "case_sla_monthly_report", date(2026, 6, 10), date(2026, 6, 10), until=FAR
    )
    assert _ranges(monthly) == {"case_sla_monthly_report": ("2026-06-01", "2026-06-01", 1)}


def test_unknown_asset_and_empty_range_are_refused() -> None:
    with pytest.raises(ValueError, match="valid assets: case_events, case_priority_mix_daily"):
        plan_impact(DATASETS, "case_evnts", JUNE_15, JUNE_15, until=FAR)
    with pytest.raises(ValueError, match="empty"):
        plan_impact(DATASETS, "case_events", JUNE_15, date(2026, 6, 14), until=FAR)


def _dataset(name: str, grain: Grain, *upstream: Upstream) -> Dataset:
    contract = DatasetContract(
        name=name,
        description=name,
        columns=(Column("d", "DATE", nullable=False),),
        partition_column="d",
        grain=grain,
        business_key=("d",),
        upstream=upstream,
    )
    return Dataset(contract, lambda window: None)


def test_monthly_to_daily_edges_and_merged_paths() -> None:
    # a (daily) -> m (monthly) -> d (daily); a -> b (daily, lookback 2) -> d; m -> e (monthly,
    # lookback 1 month). d is reached through two paths: one contiguous range covers both.
    datasets = [
        _dataset("d", "daily", Upstream("m"), Upstream("b")),
        _dataset("e", "monthly", Upstream("m", lookback_partitions=1)),
        _dataset("m", "monthly", Upstream("a")),
        _dataset("b", "daily", Upstream("a", lookback_partitions=2)),
        _dataset("a", "daily"),
    ]
    plan = plan_impact(datasets, "a", date(2026, 3, 30), date(2026, 3, 31), until=FAR)
    assert _ranges(plan) == {
        "a": ("2026-03-30", "2026-03-31", 2),
        "m": ("2026-03-01", "2026-03-01", 1),
        "b": ("2026-03-30", "2026-04-02", 4),
        "e": ("2026-03-01", "2026-04-01", 2),
        "d": ("2026-03-01", "2026-04-02", 33),
    }
    order = [e.asset for e in plan]
    assert order.index("m") < order.index("d") and order.index("b") < order.index("d")
    assert order.index("m") < order.index("e")
    d = next(e for e in plan if e.asset == "d")
    assert (d.depth, d.via) == (2, "m, b")
    assert "days of 2026-03..2026-03 (via m)" in d.why and "(via b)" in d.why
    e = next(e for e in plan if e.asset == "e")
    assert e.why == "window spillover +1 months"
    # On April 1 the April partition of e does not exist yet; the days of d do up to then.
    clipped = plan_impact(
        datasets, "a", date(2026, 3, 30), date(2026, 3, 31), until=date(2026, 4, 1)
    )
    assert _ranges(clipped)["e"] == ("2026-03-01", "2026-03-01", 1)
    assert _ranges(clipped)["d"] == ("2026-03-01", "2026-04-01", 32)


# --- the CLI and the backfill launch through a fake webserver ------------------------------


class _FakeDagster:
    """Records each GraphQL request and answers with the next canned response."""

    def __init__(self, responses: list[dict[str, Any]]) -> None:
        self.responses = responses
        self.requests: list[dict[str, Any]] = []
        self.paths: list[str] = []


@contextmanager
def fake_webserver(responses: list[dict[str, Any]]) -> Iterator[tuple[str, _FakeDagster]]:
    fake = _FakeDagster(responses)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers["Content-Length"])
            fake.paths.append(self.path)
            fake.requests.append(json.loads(self.rfile.read(length)))
            body = json.dumps(fake.responses.pop(0)).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", fake
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def _assert_valid_against_dagster_schema(request: dict[str, Any]) -> None:
    """The posted document and variables are valid for the real dagster_graphql schema."""
    from dagster_graphql.schema import create_schema
    from graphql import parse, validate
    from graphql.execution.values import get_variable_values

    schema = create_schema().graphql_schema
    document = parse(request["query"])
    assert validate(schema, document) == []
    coerced = get_variable_values(
        schema, document.definitions[0].variable_definitions, request["variables"]
    )
    assert isinstance(coerced, dict), coerced


SUCCESS = {
    "data": {
        "launchPartitionBackfill": {"__typename": "LaunchBackfillSuccess", "backfillId": "abcdefgh"}
    }
}


def test_launch_partition_backfill_posts_every_range_and_the_tags() -> None:
    ranges = {
        "case_events": ("2026-06-15", "2026-06-15"),
        "case_sla_monthly_report": ("2026-06-01", "2026-07-01"),
    }
    status = {
        "data": {
            "partitionBackfillOrError": {"__typename": "PartitionBackfill", "status": "REQUESTED"}
        }
    }
    with fake_webserver([SUCCESS, status]) as (url, fake):
        backfill_id = launch_partition_backfill(url + "/", ranges, {"ecm/trigger": "impact"})
        assert backfill_status(url, backfill_id) == "REQUESTED"
    assert backfill_id == "abcdefgh"
    assert fake.paths == ["/graphql", "/graphql"]
    launch, poll = fake.requests
    assert "launchPartitionBackfill" in launch["query"]
    assert launch["variables"] == {
        "backfillParams": {
            "partitionsByAssets": [
                {
                    "assetKey": {"path": ["case_events"]},
                    "partitions": {"range": {"start": "2026-06-15", "end": "2026-06-15"}},
                },
                {
                    "assetKey": {"path": ["case_sla_monthly_report"]},
                    "partitions": {"range": {"start": "2026-06-01", "end": "2026-07-01"}},
                },
            ],
            "tags": [{"key": "ecm/trigger", "value": "impact"}],
        }
    }
    assert poll["variables"] == {"backfillId": "abcdefgh"}
    _assert_valid_against_dagster_schema(launch)
    _assert_valid_against_dagster_schema(poll)


def test_launch_errors_carry_the_server_message() -> None:
    python_error = {
        "data": {
            "launchPartitionBackfill": {
                "__typename": "PythonError",
                "message": "boom: no such asset",
            }
        }
    }
    graphql_error = {"errors": [{"message": "Unknown argument 'x'"}], "data": None}
    ranges = {"case_events": ("2026-06-15", "2026-06-15")}
    with fake_webserver([python_error, graphql_error]) as (url, _):
        with pytest.raises(GraphQLError, match="PythonError: boom: no such asset"):
            launch_partition_backfill(url, ranges, {})
        with pytest.raises(GraphQLError, match="Unknown argument 'x'"):
            launch_partition_backfill(url, ranges, {})
    # Nobody listens there any more.
    with pytest.raises(GraphQLError, match="cannot reach"):
        launch_partition_backfill(url, ranges, {}, timeout=5)
    with pytest.raises(ValueError, match="at least one"):
        launch_partition_backfill(url, {}, {})


def test_cli_prints_the_impact_as_json(capsys) -> None:
    code = main(
        ["impact", "case_events", "--from", "2026-09-15", "--until", "2030-01-01", "--json"]
    )
    out, err = capsys.readouterr()
    assert code == 0, err
    payload = json.loads(out)
    assert payload["until"] == "2030-01-01" and payload["backfill_id"] is None
    assert {e["asset"]: (e["first"], e["last"]) for e in payload["impact"]} == {
        "case_events": ("2026-09-15", "2026-09-15"),
        "case_sla_daily_metrics": ("2026-09-15", "2026-10-14"),
        "case_priority_mix_daily": ("2026-09-15", "2026-09-15"),
        "case_sla_rolling_30d": ("2026-09-15", "2026-11-12"),
        "case_sla_monthly_report": ("2026-09-01", "2026-10-01"),
    }
    assert payload["partitions"] == 1 + 30 + 1 + 59 + 2 and payload["assets"] == 5
    # The table form ends with the totals.
    assert main(["impact", "case_events", "--from", "2026-09-15", "--until", "2030-01-01"]) == 0
    out, _ = capsys.readouterr()
    assert "window spillover +29 days" in out
    assert out.strip().splitlines()[-1].startswith("total: 5 assets, 93 partitions")
    assert main(["impact", "nope", "--from", "2026-09-15"]) == 2
    assert "valid assets" in capsys.readouterr().err


def test_cli_launches_one_backfill_with_the_mode_tags(capsys) -> None:
    args = ["impact", "case_events", "--from", "2026-09-15", "--to", "2026-09-16"]
    args += ["--until", "2026-09-30", "--launch", "--mode", "restatement"]
    # A restatement needs its reason; nothing is launched without it.
    assert main([*args, "--url", "http://127.0.0.1:9"]) == 2
    assert "--restatement-reason" in capsys.readouterr().err
    with fake_webserver([SUCCESS]) as (url, fake):
        code = main(
            [
                *args,
                "--url",
                url,
                "--restatement-reason",
                "SOURCE_CORRECTION",
                "--reason",
                "LATE_DATA",
                "--json",
            ]
        )
    out, err = capsys.readouterr()
    assert code == 0, err
    assert json.loads(out)["backfill_id"] == "abcdefgh"
    params = fake.requests[0]["variables"]["backfillParams"]
    assert {
        p["assetKey"]["path"][0]: p["partitions"]["range"] for p in params["partitionsByAssets"]
    } == {
        "case_events": {"start": "2026-09-15", "end": "2026-09-16"},
        "case_sla_daily_metrics": {"start": "2026-09-15", "end": "2026-09-30"},
        "case_priority_mix_daily": {"start": "2026-09-15", "end": "2026-09-16"},
        "case_sla_rolling_30d": {"start": "2026-09-15", "end": "2026-09-30"},
        "case_sla_monthly_report": {"start": "2026-09-01", "end": "2026-09-01"},
    }
    assert {t["key"]: t["value"] for t in params["tags"]} == {
        "ecm/backfill_mode": "restatement",
        "ecm/trigger": "impact",
        "ecm/restatement_reason": "SOURCE_CORRECTION",
        "ecm/reason": "LATE_DATA",
    }
    assert main([*args[:-2], "--mode", "bogus"]) == 2
    assert "not one of replace, restatement" in capsys.readouterr().err
