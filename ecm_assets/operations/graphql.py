"""A minimal client of the Dagster webserver's GraphQL API: launch and watch asset backfills.

Launching through the webserver (not in-process) makes the backfill the same object the UI
and the daemon manage: it shows in the UI, the daemon schedules its runs, and the run tags
steer the lifecycle. urllib only, so the CLI and the e2e tests need no extra dependency.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Mapping
from typing import Any

#: Input types checked against dagster_graphql 1.13 (schema/inputs.py): LaunchBackfillParams
#: {partitionsByAssets: [PartitionsByAssetSelector {assetKey: AssetKeyInput {path},
#: partitions: PartitionsSelector {range: PartitionRangeSelector {start, end}}}],
#: tags: [ExecutionTag {key, value}]}; every error type of the result implements Error.
LAUNCH_BACKFILL = """
mutation LaunchPartitionBackfill($backfillParams: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $backfillParams) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on Error { message }
  }
}"""

BACKFILL_STATUS = """
query BackfillStatus($backfillId: String!) {
  partitionBackfillOrError(backfillId: $backfillId) {
    __typename
    ... on PartitionBackfill { status }
    ... on Error { message }
  }
}"""


class GraphQLError(RuntimeError):
    """The webserver could not be reached, or refused or failed the request."""


def graphql(
    url: str, query: str, variables: Mapping[str, Any] | None = None, timeout: float = 30
) -> dict[str, Any]:
    """POST one GraphQL request to `<url>/graphql`; returns `data`, raises on any error."""
    endpoint = f"{url.rstrip('/')}/graphql"
    body = json.dumps({"query": query, "variables": dict(variables or {})}).encode()
    request = urllib.request.Request(
        endpoint, body, {"Content-Type": "application/json", "Accept": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            raw = response.read()
    except urllib.error.HTTPError as exc:
        # A GraphQL validation error comes back as HTTP 400 with the reason in the body.
        detail = exc.read().decode(errors="replace")[:2000]
        raise GraphQLError(f"{endpoint} answered HTTP {exc.code}: {detail}") from None
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise GraphQLError(f"cannot reach the Dagster webserver at {endpoint}: {reason}") from None
    try:
        payload = json.loads(raw)
    except ValueError:
        raise GraphQLError(f"{endpoint} did not answer JSON: {raw[:200]!r}") from None
    if payload.get("errors"):
        messages = "; ".join(str(e.get("message", e)) for e in payload["errors"])
        raise GraphQLError(f"{endpoint}: GraphQL error: {messages}")
    return payload.get("data") or {}


def _result(data: dict[str, Any], field: str, expected: str) -> dict[str, Any]:
    result = data.get(field) or {}
    typename = result.get("__typename")
    if typename != expected:
        raise GraphQLError(f"{field} failed with {typename}: {result.get('message', result)}")
    return result


def launch_partition_backfill(
    url: str,
    ranges: Mapping[str, tuple[str, str]],
    tags: Mapping[str, str],
    timeout: float = 30,
) -> str:
    """Launch ONE asset backfill, each asset over its own partition key range; its id.

    `ranges` maps an asset key ("a/b" for a multi-part key) to its first and last
    partition keys, both inclusive.
    """
    if not ranges:
        raise ValueError("a backfill needs at least one asset range")
    params = {
        "partitionsByAssets": [
            {
                "assetKey": {"path": asset.split("/")},
                "partitions": {"range": {"start": first, "end": last}},
            }
            for asset, (first, last) in ranges.items()
        ],
        "tags": [{"key": key, "value": value} for key, value in tags.items()],
    }
    data = graphql(url, LAUNCH_BACKFILL, {"backfillParams": params}, timeout)
    return str(_result(data, "launchPartitionBackfill", "LaunchBackfillSuccess")["backfillId"])


def backfill_status(url: str, backfill_id: str, timeout: float = 30) -> str:
    """The backfill's BulkActionStatus (REQUESTED, COMPLETED_SUCCESS, FAILED, ...)."""
    data = graphql(url, BACKFILL_STATUS, {"backfillId": backfill_id}, timeout)
    return str(_result(data, "partitionBackfillOrError", "PartitionBackfill")["status"])
