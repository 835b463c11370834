"""`ecm review approve` publishes outside any run, so it reports the materializations itself:
the UI shows the partitions materialized and materialization sensors see the approval."""

from __future__ import annotations

from datetime import date

import dagster as dg

from ecm_assets.orchestration.factory import RESTATEMENT_TAG
from tests.test_lifecycle._support import MONTH, make_env, manifest_of, write_landing_csv

DAILY = ["case_events", "case_sla_daily_metrics"]
MONTHLY = "case_sla_monthly_report"


def _breaching_cases(n: int) -> list[dict[str, str]]:
    """P1 cases opened on 09-01 and resolved two days later: each one breaches its SLA."""
    events = []
    for i in range(n):
        base = {"case_id": f"CRE{i:06d}", "unit_id": "U01", "priority": "P1"}
        for kind, ts in (("opened", "2026-09-01T01:00:00Z"), ("resolved", "2026-09-03T01:00:00Z")):
            events.append(
                {**base, "event_id": f"ERE{kind[0]}{i:06d}", "event_type": kind, "event_ts": ts}
            )
    return events


def test_approve_reports_one_materialization_per_published_partition(
    demo_data, tmp_path, capsys
) -> None:
    env = make_env(demo_data[0], tmp_path)
    env.materialize(DAILY, first="2026-09-01", last="2026-09-03")
    env.materialize([MONTHLY], partition_key=MONTH)
    write_landing_csv(env.root, date(2026, 9, 3), "late-review-events.csv", _breaching_cases(120))
    env.materialize(DAILY, first="2026-09-01", last="2026-09-03")
    # Closed after the upstream rerun, which would otherwise be held itself.
    env.ecm_json(capsys, "close", MONTHLY, MONTH, "--by", "alice")
    held = env.materialize(
        [MONTHLY],
        partition_key=MONTH,
        tags={RESTATEMENT_TAG: "SOURCE_CORRECTION"},
        expect_success=False,
    )
    assert manifest_of(env, capsys, held.run_id, MONTHLY)["status"] == "HELD"
    key = dg.AssetKey(MONTHLY)

    # instance_for_test sets DAGSTER_HOME: the CLI reports into this instance.
    with dg.instance_for_test() as instance:
        assert instance.get_latest_materialization_event(key) is None
        approved = env.ecm_json(
            capsys, "review", "approve", held.run_id, "--by", "bob", "--note", "late batch ok"
        )
        assert approved["decision"] == "APPROVED"
        records = instance.fetch_materializations(key, limit=10).records
        assert len(records) == 1
        record = records[0]
        assert record.run_id == ""  # runless: no Dagster run published it
        materialization = record.asset_materialization
        assert materialization is not None and materialization.partition == MONTH
        metadata = {k: v.value for k, v in materialization.metadata.items()}
        assert metadata == {
            "run_id": held.run_id,
            "approved_by": "bob",
            "note": "late batch ok",
            "rows": approved["published_rows"],
            "business_checksum": approved["business_checksum"],
            "ecm/approval": True,
            "version": 2,
        }
        assert instance.get_materialized_partitions(key) == {MONTH}
        # Nothing else was reported.
        assert instance.get_latest_materialization_event(dg.AssetKey("case_events")) is None
