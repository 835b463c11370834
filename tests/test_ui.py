"""What the Dagster UI shows is true, checked through the real webserver and daemon.

One small demo warehouse: a publishing backfill of three case_events partitions (one run),
then a dry_run backfill of the same partitions through the `dry_run_daily` job (every daily
asset; the ones downstream of a dry run are skipped). Then:
GraphQL says each partition's materialization carries its own row count, the dry-run
backfill ended COMPLETED_SUCCESS, and the check views agree and still show the published
run's results; a real Chromium renders the asset, its Partitions, Checks and Plots tabs and
the backfill page.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from collections.abc import Iterator
from contextlib import ExitStack
from datetime import date
from pathlib import Path

import duckdb
import pytest

from ecm_assets.demo.landing_generator import generate_demo_data
from ecm_assets.operations.graphql import backfill_status
from tests._processes import graphql, runs, start_dagster

DEADLINE_SECONDS = 480
# Starting both processes and two backfills on a loaded 2-core machine; the browser part
# alone is bounded by its own 120 s timeout.
pytestmark = pytest.mark.timeout(DEADLINE_SECONDS + 120)
PARTITIONS = ["2026-09-01", "2026-09-02", "2026-09-03"]
CHROMIUM = os.environ.get("ECM_CHROMIUM", "/usr/bin/chromium")

LAUNCH = """
mutation($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PythonError { message }
  }
}"""

ASSET = """
query($partitions: [String!]) {
  assetNodeOrError(assetKey: {path: ["case_events"]}) {
    ... on AssetNode {
      metadataEntries { label ... on TextMetadataEntry { text } }
      assetMaterializations(partitions: $partitions) {
        partition
        runId
        metadataEntries {
          label
          ... on IntMetadataEntry { intValue }
          ... on TextMetadataEntry { text }
        }
      }
      assetChecksOrError {
        ... on AssetChecks {
          checks {
            name
            blocking
            executionForLatestMaterialization { status runId partition }
            partitionStatuses {
              ... on AssetCheckTimePartitionStatuses { ranges { startKey endKey status } }
            }
          }
        }
      }
    }
  }
}"""

EXECUTIONS = """
query($check: String!, $partition: String) {
  assetCheckExecutions(
    assetKey: {path: ["case_events"]}, checkName: $check, partition: $partition, limit: 1
  ) { status runId partition }
}"""


def _wait_for_backfill(port: int, backfill_id: str, deadline: float, tmp: Path) -> str:
    status = ""
    while time.monotonic() < deadline:
        status = backfill_status(f"http://127.0.0.1:{port}", backfill_id)
        if status.startswith(("COMPLETED", "FAILED", "CANCELED")):
            return status
        time.sleep(1)
    raise AssertionError(
        f"backfill {backfill_id} still {status}: {(tmp / 'daemon.log').read_text()[-3000:]}"
    )


def _launch(port: int, params: dict) -> str:
    launched = graphql(port, LAUNCH, {"params": {"fromFailure": False, **params}})
    result = launched["launchPartitionBackfill"]
    assert result["__typename"] == "LaunchBackfillSuccess", result
    return result["backfillId"]


@pytest.fixture(scope="module")
def ui(tmp_path_factory) -> Iterator[dict]:
    tmp = tmp_path_factory.mktemp("ui")
    data = tmp / "data"
    generate_demo_data(data, date(2026, 9, 1), date(2026, 9, 3), seed=5, scale=0.05)
    warehouse = tmp / "warehouse.duckdb"
    deadline = time.monotonic() + DEADLINE_SECONDS
    with ExitStack() as stack:
        port, _ = start_dagster(
            stack, tmp, {"ECM_DATA_DIR": str(data), "ECM_WAREHOUSE": str(warehouse)}, deadline
        )
        # What the webserver reads to skip its first-visit "Join the community" dialog,
        # which otherwise covers every page the browser test opens.
        (tmp / "home" / ".nux").mkdir()
        (tmp / "home" / ".nux" / "nux.yaml").write_text("seen: 1\n")
        published = _launch(
            port, {"partitionNames": PARTITIONS, "assetSelection": [{"path": ["case_events"]}]}
        )
        published_status = _wait_for_backfill(port, published, deadline, tmp)
        dry_run = _launch(
            port,
            {
                "partitionNames": PARTITIONS,
                "selector": {
                    "partitionSetName": "dry_run_daily_partition_set",
                    "repositorySelector": {
                        "repositoryName": "__repository__",
                        "repositoryLocationName": "ecm_assets",
                    },
                },
                # No assetSelection: a job backfill narrowed to assets selects all their
                # checks again (Dagster 1.13), and planned checks of a run that publishes
                # nothing would end "Skipped".
            },
        )
        dry_run_status = _wait_for_backfill(port, dry_run, deadline, tmp)
        yield {
            "port": port,
            "tmp": tmp,
            "warehouse": warehouse,
            "published": (published, published_status),
            "dry_run": (dry_run, dry_run_status),
            "runs": runs(port),
        }


def _backfill_runs(ui: dict, backfill_id: str) -> list[dict]:
    return [r for r in ui["runs"] if r["tags"].get("dagster/backfill") == backfill_id]


def test_each_partition_materialization_carries_its_own_counts(ui) -> None:
    assert ui["published"][1] == "COMPLETED_SUCCESS"
    node = graphql(ui["port"], ASSET, {"partitions": PARTITIONS})["assetNodeOrError"]
    by_partition = {}
    for m in node["assetMaterializations"]:
        by_partition[m["partition"]] = {e["label"]: e for e in m["metadataEntries"]}
    assert sorted(by_partition) == PARTITIONS
    with duckdb.connect(str(ui["warehouse"]), read_only=True) as conn:
        published = dict(
            conn.sql(
                "SELECT strftime(business_date, '%Y-%m-%d'), count(*) FROM case_events GROUP BY 1"
            ).fetchall()
        )
    row_counts = {p: meta["dagster/row_count"]["intValue"] for p, meta in by_partition.items()}
    assert row_counts == published
    assert len(set(row_counts.values())) > 1, row_counts  # not the run total on every one
    for meta in by_partition.values():
        assert "ecm manifest" not in meta["manifest"]["text"]  # a locator, not a command
        assert "input_locked_at" not in meta  # as_of says it once
        # accepted = dagster/row_count; the run id and table are said once elsewhere
        assert not {"accepted_rows", "ecm/run_id", "dagster/table_name"} & set(meta)
    definition = {e["label"]: e for e in node["metadataEntries"]}
    assert definition["dagster/table_name"]["text"] == "main.case_events"
    digests = {meta["landing_digest"]["text"] for meta in by_partition.values()}
    assert len(digests) == len(PARTITIONS)  # each partition's own files


def test_dry_run_backfill_ends_green_and_leaves_check_results_alone(ui) -> None:
    dry_run_id, status = ui["dry_run"]
    assert status == "COMPLETED_SUCCESS"
    dry_runs = _backfill_runs(ui, dry_run_id)
    assert dry_runs and all(r["status"] == "SUCCESS" for r in dry_runs), dry_runs
    assert all(r["tags"]["ecm/backfill_mode"] == "dry_run" for r in dry_runs)
    [published_run] = _backfill_runs(ui, ui["published"][0])

    node = graphql(ui["port"], ASSET, {"partitions": PARTITIONS})["assetNodeOrError"]
    checks = {c["name"]: c for c in node["assetChecksOrError"]["checks"]}
    assert checks["landing_columns"]["blocking"] and checks["quality_gate"]["blocking"]
    for name, check in checks.items():
        if name == "quality_gate":
            continue
        latest = check["executionForLatestMaterialization"]
        [execution] = graphql(ui["port"], EXECUTIONS, {"check": name, "partition": ""})[
            "assetCheckExecutions"
        ]
        # The asset view and the check view agree, on the publishing run's evaluation.
        assert latest["status"] == execution["status"], name
        assert latest["runId"] == execution["runId"] == published_run["id"], name
        assert execution["status"] in ("SUCCEEDED", "FAILED"), (name, execution)
    # quality_gate is partitioned: each partition's latest evaluation is the published run's,
    # and the partition status ranges (when the webserver has computed them) agree with it.
    ranges = (checks["quality_gate"]["partitionStatuses"] or {}).get("ranges") or []
    assert {r["status"] for r in ranges} <= {"SUCCEEDED", "FAILED"}, ranges
    for partition in PARTITIONS:
        [execution] = graphql(
            ui["port"], EXECUTIONS, {"check": "quality_gate", "partition": partition}
        )["assetCheckExecutions"]
        assert execution["runId"] == published_run["id"], partition
        assert execution["status"] in ("SUCCEEDED", "FAILED"), (partition, execution)
        for r in ranges:
            if r["startKey"] <= partition <= r["endKey"]:
                assert r["status"] == execution["status"], partition


def _browser_or_skip():
    """Playwright driving Debian's chromium; missing pieces skip locally, never in CI."""
    missing = []
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing.append("the playwright package (pip install -e '.[dev]')")
        sync_playwright = None
    if not (Path(CHROMIUM).exists() or shutil.which("chromium")):
        missing.append(f"chromium at {CHROMIUM} (apt-get install -y chromium)")
    if missing:
        reason = "real-browser UI test needs " + " and ".join(missing)
        if os.environ.get("CI") == "true":
            pytest.fail(reason + "; CI=true never skips it")
        pytest.skip(reason)
    return sync_playwright


#: Bound of each browser step (load a page, find one rendered text): generous, because the
#: machine may be shared; a page that renders is found in seconds.
STEP_MS = 120_000


def _open(page, shots: Path, name: str, url: str, texts: list) -> str:
    """Load a page, wait for each text to render, screenshot it; returns the page's text."""
    page.goto(url, wait_until="domcontentloaded", timeout=STEP_MS)
    try:
        for text in texts:
            # attached, not visible: long lists render below the fold
            page.get_by_text(text).first.wait_for(state="attached", timeout=STEP_MS)
    finally:
        page.screenshot(path=str(shots / f"{name}.png"), full_page=True)
    return page.inner_text("body")


def _rendered_int(body: str, label: str) -> int:
    """The value a metadata table renders next to `label` (Dagster prints 1,234 for ints)."""
    match = re.search(rf"(?m)^{re.escape(label)}\s+([\d,]+)\s*$", body)
    assert match, (label, body[:3000])
    return int(match.group(1).replace(",", ""))


@pytest.mark.timeout(DEADLINE_SECONDS + 900)
def test_browser_renders_asset_partitions_checks_plots_and_backfill(ui) -> None:
    sync_playwright = _browser_or_skip()
    base = f"http://127.0.0.1:{ui['port']}"
    shots = ui["tmp"] / "screenshots"
    shots.mkdir(exist_ok=True)
    dry_run_id = ui["dry_run"][0]
    with duckdb.connect(str(ui["warehouse"]), read_only=True) as conn:
        published = dict(
            conn.sql(
                "SELECT strftime(business_date, '%Y-%m-%d'), count(*) FROM case_events GROUP BY 1"
            ).fetchall()
        )
    node = graphql(ui["port"], ASSET, {"partitions": PARTITIONS})["assetNodeOrError"]
    statuses = {
        c["name"]: (c["executionForLatestMaterialization"] or {}).get("status")
        for c in node["assetChecksOrError"]["checks"]
    }
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM if Path(CHROMIUM).exists() else shutil.which("chromium"),
            headless=True,
            args=["--no-sandbox", "--disable-dev-shm-usage"],
        )
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            asset = _open(
                page,
                shots,
                "asset",
                f"{base}/assets/case_events",
                ["Case events of one business date", "enforcement-analytics", "Columns"],
            )
            assert "case_sla_daily_metrics" in asset  # lineage: downstream listed

            # Each partition's own figures: its detail pane shows the row count that the
            # warehouse holds for that day (not the run's total), and the days differ.
            shown = {}
            for partition in PARTITIONS:
                body = _open(
                    page,
                    shots,
                    f"partition-{partition}",
                    f"{base}/assets/case_events?view=partitions&partition={partition}",
                    ["Materialized (3)", "Latest materialization", "dagster/row_count"],
                )
                shown[partition] = _rendered_int(body, "dagster/row_count")
            assert shown == published, (shown, published)
            assert len(set(shown.values())) > 1, shown

            # Check statuses: none "Skipped", and each is what the asset's GraphQL says.
            body = _open(
                page,
                shots,
                "checks",
                f"{base}/assets/case_events?view=checks",
                ["quality_gate", "landing_columns", re.compile("^(Succeeded|Failed)$")],
            )
            listed = body.split("Execute all", 1)[-1]
            assert "Skipped" not in listed, listed[:2000]
            words = {"SUCCEEDED": "Succeeded", "FAILED": "Failed"}
            for name, status in statuses.items():
                match = re.search(rf"(?m)^{name}\n{name}\n(\w+)$", listed)
                assert match, (name, listed[:2000])
                assert match.group(1) == words.get(status, status), (name, status)

            # Plots of metadata over partitions (the Overview's Metadata section).
            _open(page, shots, "overview", f"{base}/assets/case_events", ["Metadata"])
            page.get_by_text("Plots", exact=True).first.click(timeout=STEP_MS)
            try:
                page.get_by_text("When graphing values by partition").first.wait_for(
                    state="attached", timeout=STEP_MS
                )
                page.locator("canvas").first.wait_for(state="attached", timeout=STEP_MS)
            finally:
                page.screenshot(path=str(shots / "plots.png"), full_page=True)
            plots = page.inner_text("body").split("Plots", 1)[-1]
            for label in ("dagster/row_count", "quarantined_rows", "input_rows"):
                assert label in plots, plots[:2000]

            # The dry-run backfill's page: green, every partition succeeded.
            body = _open(
                page,
                shots,
                "backfill",
                f"{base}/runs/b/{dry_run_id}",
                [dry_run_id, "dry_run_daily", "100% completed"],
            )
            status = re.search(r"(?m)^Status\n(\w+)$", body)
            assert status and status.group(1) in ("Succeeded", "Completed"), body[:2000]
            counts = re.search(r"(?m)^[ \t]*(\d+)[ \t]+(\d+)[ \t]+(\d+)[ \t]+(\d+)[ \t]*$", body)
            assert counts, body[:2000]
            targeted, in_progress, succeeded, failed = map(int, counts.groups())
            assert (targeted, in_progress, succeeded, failed) == (3, 0, 3, 0), body[:2000]
        finally:
            browser.close()
    names = {f.name for f in shots.iterdir()}
    assert {"asset.png", "checks.png", "plots.png", "backfill.png"} <= names, names
