"""The outbox sensor: owed Dagster events are delivered on a tick, with no run or CLI call.

A publish whose process died after COMMIT and before Dagster recorded its materializations
leaves the manifest `dagster_event = OWED` (publish/outbox.py). `ecm recover` and the next
run step settle it; this sensor does it on its own, exactly once:

- tick N reads the owed publishes under a short warehouse lock, asks the instance which
  partitions already hold their event (the lock is not held meanwhile), and returns the
  missing ones as runless `AssetMaterialization`s in `SensorResult(asset_events=...)`, with
  the ids of the manifests it handled in the cursor. The daemon records the events, then
  the cursor, for that tick.
- tick N+1 first marks the cursor's manifests DELIVERED in the ledger.

A tick that fails before its events are recorded saves no cursor: the next tick finds the
same manifests owed and emits again. A tick whose events were recorded but whose cursor was
not saved emits nothing again, because each partition is checked against the instance
before it is emitted (the `ecm/run_id` metadata), and that tick marks it. A warehouse busy
for more than a moment skips the tick and keeps the cursor.
"""

from __future__ import annotations

import json
import os

import dagster as dg

from ecm_assets.adapters.backends import open_warehouse
from ecm_assets.adapters.warehouse import WarehouseLockedError
from ecm_assets.orchestration.factory import IO_MANAGER_KEY
from ecm_assets.publish.io_manager import DuckDBPublishIOManager
from ecm_assets.publish.outbox import mark_delivered, owed_materializations, read_owed

OUTBOX_SENSOR = "ecm_outbox_delivery"
#: How long a tick waits for the warehouse lock before skipping (a run's publish may hold it).
LOCK_WAIT_SECONDS = 2.0


def outbox_interval_seconds() -> int:
    """How often the outbox is checked (ECM_OUTBOX_INTERVAL_SECONDS, default 60). Owed events
    are rare (a run died after COMMIT), and every check opens the warehouse, which keeps
    writers out for that moment: not worth doing at the landing sensors' pace."""
    return int(os.environ.get("ECM_OUTBOX_INTERVAL_SECONDS", "60"))


def load_emitted(cursor: str | None) -> list[tuple[str, str, int]]:
    """The (run_id, asset, attempt) whose events the previous tick handed to Dagster."""
    if not cursor:
        return []
    return [(r, a, int(n)) for r, a, n in json.loads(cursor).get("emitted", [])]


def dump_emitted(emitted: list[tuple[str, str, int]]) -> str:
    return json.dumps({"emitted": [list(e) for e in emitted]}, separators=(",", ":"))


def build_outbox_sensor(minimum_interval_seconds: int | None = None) -> dg.SensorDefinition:
    """The default-running sensor that delivers the ledger's owed Dagster events."""
    if minimum_interval_seconds is None:
        minimum_interval_seconds = outbox_interval_seconds()

    @dg.sensor(
        name=OUTBOX_SENSOR,
        description=(
            "Delivers the Dagster materializations the ledger's outbox still owes: a publish "
            "committed in the warehouse whose run died before Dagster recorded it is reported "
            "as a runless materialization (metadata ecm/outbox=true, ecm/run_id), once; a "
            "partition a later run replaced gets none. Skips a tick while the warehouse is busy."
        ),
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
    )
    def _sensor(
        context: dg.SensorEvaluationContext, warehouse_io_manager: DuckDBPublishIOManager
    ) -> dg.SensorResult | dg.SkipReason:
        if context.instance.is_ephemeral:
            return dg.SkipReason("an ephemeral instance keeps no events: nothing to deliver")
        warehouse = open_warehouse(warehouse_io_manager.database)
        if not warehouse.exists():
            return dg.SkipReason(f"no warehouse at {warehouse.url} yet")
        emitted = load_emitted(context.cursor)
        try:
            with warehouse.connect(timeout_seconds=LOCK_WAIT_SECONDS) as conn:
                # The previous tick's events were recorded with its cursor: settle them.
                marked = mark_delivered(conn, emitted)
                owed = read_owed(conn)
        except WarehouseLockedError as exc:
            # Nothing is lost: the cursor stays, the next tick does the same work.
            return dg.SkipReason(f"warehouse busy; owed events wait for the next tick: {exc}")
        if marked:
            context.log.info(
                "outbox settled: " + ", ".join(f"{r} {a} attempt {n}" for r, a, n in marked)
            )
        events: list[dg.AssetMaterialization] = []
        handled: list[tuple[str, str, int]] = []
        for owed_publish in owed:
            found, delivery = owed_materializations(context.instance, owed_publish)
            events += found
            handled.append((delivery.run_id, delivery.asset, delivery.attempt))
            context.log.info(
                f"outbox: run {delivery.run_id} {delivery.asset} attempt {delivery.attempt}: "
                f"reporting {list(delivery.reported)}, already in Dagster "
                f"{list(delivery.already_in_dagster)}, replaced since {list(delivery.superseded)}"
            )
        if not handled and not emitted:
            return dg.SkipReason("no Dagster event is owed")
        return dg.SensorResult(asset_events=events, cursor=dump_emitted(handled))

    return _sensor


assert IO_MANAGER_KEY == "warehouse_io_manager", "the sensor's resource parameter names it"
