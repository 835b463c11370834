"""deploy/helm/values.yaml: every key is one the official Dagster chart documents, and the
settings ecm_assets relies on (K8sRunLauncher, external PostgreSQL from a secret, queued runs,
run monitoring that frees pool slots, the warehouse pool at 1) are there.

No cluster runs here: this checks the file against the chart's values schema as published with
chart 1.13 (helm/dagster/schema in dagster-io/dagster), transcribed below for the keys we use.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
VALUES = REPO / "deploy" / "helm" / "values.yaml"

#: Documented keys of the chart, as nested dicts; `None` marks a free-form value (a mapping
#: or list the chart passes through to Kubernetes or the instance unchanged).
_IMAGE = {"repository": None, "tag": None, "pullPolicy": None}
_K8S_RUN_LAUNCHER = {
    "image": _IMAGE,
    "imagePullPolicy": None,
    "jobNamespace": None,
    "loadInclusterConfig": None,
    "kubeconfigFile": None,
    "envConfigMaps": None,
    "envSecrets": None,
    "envVars": None,
    "volumeMounts": None,
    "volumes": None,
    "labels": None,
    "failPodOnRunFailure": None,
}
_USER_DEPLOYMENT = {
    "name": None,
    "image": _IMAGE,
    "port": None,
    "dagsterApiGrpcArgs": None,
    "codeServerArgs": None,
    "includeConfigInLaunchedRuns": {"enabled": None},
    "env": None,
    "envConfigMaps": None,
    "envSecrets": None,
    "annotations": None,
    "nodeSelector": None,
    "affinity": None,
    "tolerations": None,
    "podSecurityContext": None,
    "securityContext": None,
    "resources": None,
    "livenessProbe": None,
    "readinessProbe": None,
    "startupProbe": None,
    "labels": None,
    "volumeMounts": None,
    "volumes": None,
    "schedulerName": None,
}
DOCUMENTED: dict[str, Any] = {
    "global": {
        "postgresqlSecretName": None,
        "dagsterHome": None,
        "serviceAccountName": None,
        "celeryConfigSecretName": None,
        "dagsterInstanceConfigMap": None,
    },
    "dagsterWebserver": {"replicaCount": None, "image": _IMAGE, "env": None, "resources": None},
    "dagster-user-deployments": {
        "enabled": None,
        "enableSubchart": None,
        "imagePullSecrets": None,
        "deployments": [_USER_DEPLOYMENT],
    },
    "runLauncher": {
        "type": None,
        "config": {"k8sRunLauncher": _K8S_RUN_LAUNCHER},
    },
    "postgresql": {
        "postgresqlScheme": None,
        "image": None,
        "enabled": None,
        "postgresqlHost": None,
        "postgresqlUsername": None,
        "postgresqlPassword": None,
        "postgresqlDatabase": None,
        "postgresqlParams": None,
        "service": {"port": None},
    },
    "generatePostgresqlPasswordSecret": None,
    "dagsterDaemon": {
        "enabled": None,
        "image": _IMAGE,
        "runCoordinator": {
            "enabled": None,
            "type": None,
            "config": {
                "queuedRunCoordinator": {
                    "maxConcurrentRuns": None,
                    "tagConcurrencyLimits": None,
                    "dequeueIntervalSeconds": None,
                    "dequeueNumWorkers": None,
                    "dequeueUseThreads": None,
                }
            },
        },
        "heartbeatTolerance": None,
        "runMonitoring": {
            "enabled": None,
            "startTimeoutSeconds": None,
            "cancelTimeoutSeconds": None,
            "maxResumeRunAttempts": None,
            "pollIntervalSeconds": None,
            "freeSlotsAfterRunEndSeconds": None,
        },
        "runRetries": {"enabled": None, "maxRetries": None},
        "env": None,
        "envSecrets": None,
        "resources": None,
    },
    "concurrency": {
        "enabled": None,
        "pools": {"defaultLimit": None, "granularity": None, "opGranularityRunBuffer": None},
        "runs": {"maxConcurrentRuns": None, "tagConcurrencyLimits": None},
    },
    "telemetry": {"enabled": None},
}


def _unknown_keys(value: Any, documented: Any, path: str = "") -> list[str]:
    if documented is None:
        return []
    if isinstance(documented, list):
        assert isinstance(value, list), f"{path} must be a list"
        return [
            k
            for i, item in enumerate(value)
            for k in _unknown_keys(item, documented[0], f"{path}[{i}]")
        ]
    assert isinstance(value, dict), f"{path} must be a mapping, got {value!r}"
    unknown = []
    for key, sub in value.items():
        here = f"{path}.{key}" if path else key
        if key not in documented:
            unknown.append(here)
        else:
            unknown += _unknown_keys(sub, documented[key], here)
    return unknown


def _values() -> dict[str, Any]:
    return yaml.safe_load(VALUES.read_text())


def test_every_key_is_documented_by_the_chart() -> None:
    assert _unknown_keys(_values(), DOCUMENTED) == []


def test_the_check_refuses_a_misspelled_key() -> None:
    values = _values()
    values["runLauncher"]["config"]["k8sRunLauncher"]["jobNamepsace"] = "ecm"
    assert _unknown_keys(values, DOCUMENTED) == ["runLauncher.config.k8sRunLauncher.jobNamepsace"]


def test_settings_ecm_assets_relies_on() -> None:
    v = _values()
    # Runs are Kubernetes Jobs; the instance is an external PostgreSQL whose password is a secret.
    assert v["runLauncher"]["type"] == "K8sRunLauncher"
    assert v["postgresql"]["enabled"] is False
    assert v["postgresql"]["postgresqlHost"]
    assert v["postgresql"]["postgresqlPassword"] == ""
    assert v["generatePostgresqlPasswordSecret"] is False
    assert v["global"]["postgresqlSecretName"]
    # The user-code server loads the same module as the CLI and the demo.
    (deployment,) = v["dagster-user-deployments"]["deployments"]
    assert deployment["dagsterApiGrpcArgs"] == ["-m", "ecm_assets.definitions"]
    assert {"ECM_DATA_DIR", "ECM_WAREHOUSE"} <= set(deployment["env"])
    assert deployment["env"]["ECM_WAREHOUSE"].startswith(deployment["env"]["ECM_DATA_DIR"])
    # Run pods mount the same data volume as the code server.
    launcher = v["runLauncher"]["config"]["k8sRunLauncher"]
    assert launcher["volumes"] == deployment["volumes"]
    assert launcher["volumeMounts"] == deployment["volumeMounts"]
    # Queued runs, and dead runs settled so their pool slots are freed.
    daemon = v["dagsterDaemon"]
    assert daemon["runCoordinator"]["type"] == "QueuedRunCoordinator"
    assert daemon["runMonitoring"]["enabled"] is True
    assert daemon["runMonitoring"]["freeSlotsAfterRunEndSeconds"] > 0
    # The DuckDB warehouse admits one writer: op-granularity pools of one.
    assert v["concurrency"]["enabled"] is True
    assert v["concurrency"]["pools"] == {"defaultLimit": 1, "granularity": "op"}


def test_instance_files_agree_on_what_is_not_storage() -> None:
    """dagster.postgres.yaml changes where the instance lives, not how runs are guarded."""
    sqlite = yaml.safe_load((REPO / "dagster.yaml").read_text())
    postgres = yaml.safe_load((REPO / "dagster.postgres.yaml").read_text())
    assert "storage" not in sqlite
    assert set(postgres["storage"]["postgres"]["postgres_db"]) == {
        "scheme",
        "hostname",
        "port",
        "username",
        "password",
        "db_name",
    }
    for section in ("run_coordinator", "run_monitoring"):
        assert postgres[section] == sqlite[section], section
    assert postgres["concurrency"]["pools"] == sqlite["concurrency"]["pools"]


def test_the_warehouse_url_comes_from_a_secret_in_every_pod() -> None:
    """ECM_WAREHOUSE_URL (with its password) is a Kubernetes secret mounted into the code server
    and every run pod; values carry no URL, and the DuckDB path stays as the fallback."""
    v = _values()
    (deployment,) = v["dagster-user-deployments"]["deployments"]
    launcher = v["runLauncher"]["config"]["k8sRunLauncher"]
    secrets = {s["name"] for s in deployment["envSecrets"]}
    assert "ecm-warehouse" in secrets
    assert secrets <= {s["name"] for s in launcher["envSecrets"]}
    assert "ECM_WAREHOUSE_URL" not in deployment["env"]
    assert "postgresql://" not in yaml.safe_dump(v)
    assert deployment["env"]["ECM_WAREHOUSE"].endswith(".duckdb")


def test_pool_limits_follow_the_backend() -> None:
    """DuckDB's pool takes the instance default (1) everywhere; PostgreSQL's pool gets its own
    limit, set in the instance by the CLI because neither dagster.yaml nor the chart has a
    per-pool key: `make dev-postgres`, the benchmark and the Helm notes name the same pool."""
    from ecm_assets.orchestration.factory import POSTGRES_POOL, WAREHOUSE_POOL

    assert (WAREHOUSE_POOL, POSTGRES_POOL) == ("ecm_duckdb_warehouse", "ecm_postgres_warehouse")
    for name in ("dagster.yaml", "dagster.postgres.yaml"):
        pools = yaml.safe_load((REPO / name).read_text())["concurrency"]["pools"]
        assert pools["default_limit"] == 1, name
    assert _values()["concurrency"]["pools"]["defaultLimit"] == 1

    makefile = (REPO / "Makefile").read_text()
    recipe = makefile.split("\ndev-postgres: install\n", 1)[1].split("\n\n", 1)[0]
    assert f"instance concurrency set \\\n\t\t{POSTGRES_POOL} $(PG_POOL_LIMIT)" in recipe
    limit = re.search(r"^PG_POOL_LIMIT \?= (\d+)$", makefile, re.M)
    assert limit and int(limit.group(1)) > 1
    assert f"dagster instance concurrency set {POSTGRES_POOL} 4" in VALUES.read_text()
    assert f'POSTGRES_POOL = "{POSTGRES_POOL}"' in (REPO / "benchmarks" / "backfill.py").read_text()
