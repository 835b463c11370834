"""Every `ecm` command with hostile arguments (issue 11, "commands that must fail cleanly").

Each case must exit 2 with exactly one line on stderr, no traceback, and create no file:
no command but a publish creates a warehouse. Called in-process (main(argv)) for speed; a
few cases run the installed `ecm` script in a subprocess to prove the same at the process
boundary.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from ecm_assets.cli import main

NL = "a\nb"
HUGE = "x" * 100_000


def hostile_cases(tmp: Path) -> list[list[str]]:
    """(argv) of every command with hostile arguments; `W` is an existing empty warehouse."""
    typo = str(tmp / "typo.duckdb")
    w = str(tmp / "w.duckdb")
    return [
        # Warehouse paths: a typo, a file that is not DuckDB's, a directory, a NUL byte.
        ["recover", "--warehouse", typo, "--json"],
        ["summary", "--warehouse", "/etc/passwd"],
        ["summary", "--warehouse", str(tmp)],
        ["summary", "--warehouse", typo],
        ["manifest", "--warehouse", typo],
        ["versions", "case_sla_monthly_report", "--warehouse", typo],
        ["close", "case_sla_monthly_report", "2026-09-01", "--warehouse", typo],
        [
            "rollback",
            "case_sla_monthly_report",
            "2026-09-01",
            "--to",
            "1",
            "--reason",
            "r",
            "--warehouse",
            typo,
        ],
        ["review", "list", "--warehouse", typo],
        ["review", "approve", "r1", "--note", "ok", "--warehouse", typo],
        ["quarantine", "case_events", "2026-09-03", "--warehouse", typo],
        ["replay", "r1", "--warehouse", typo],
        ["diff", "case_sla_monthly_report", "2026-09-01", "1", "2", "--warehouse", typo],
        ["summary", "--warehouse", "a\0b"],
        # Unknown run ids are refused like `ecm manifest` refuses them.
        ["recover", "no-such-run", "--warehouse", w],
        ["manifest", "no-such-run", "--warehouse", w],
        ["recover", "'; DROP TABLE x; --", "--warehouse", w],
        # Numbers out of range never reach SQL.
        ["quarantine", "case_events", "2026-09-03", "--limit", "-1", "--warehouse", w],
        ["quarantine", "case_events", "2026-09-03", "--limit", "9" * 23, "--warehouse", w],
        ["diff", "case_sla_monthly_report", "2026-09-01", "0", "-5", "--warehouse", w],
        [
            "rollback",
            "case_sla_monthly_report",
            "2026-09-01",
            "--to",
            "1e9",
            "--reason",
            "r",
            "--warehouse",
            w,
        ],
        # Partition keys and asset names are validated as a whole, before any launch.
        ["quarantine", "case_events", "2026-09-03xyz", "--warehouse", w],
        ["quarantine", "case_events", "2026-09-03'; DROP TABLE case_events; --", "--warehouse", w],
        ["quarantine", "no_such_asset", "2026-09-03", "--warehouse", w],
        [
            "materialize",
            "--select",
            "case_events",
            "--partition",
            "2026-02-30",
            "--warehouse",
            typo,
        ],
        [
            "materialize",
            "--select",
            "case_events;drop",
            "--partition",
            "2026-09-03",
            "--warehouse",
            typo,
        ],
        [
            "materialize",
            "--select",
            "case_events",
            "--partition-range",
            "2026-09-05...2026-09-01",
            "--warehouse",
            typo,
        ],
        [
            "materialize",
            "--select",
            "case_events",
            "--partition-range",
            "2026-09-05",
            "--warehouse",
            typo,
        ],
        [
            "materialize",
            "--select",
            "case_events",
            "--partition",
            "2026-09-03",
            "--reason",
            NL,
            "--warehouse",
            typo,
        ],
        [
            "materialize",
            "--select",
            "case_events",
            "--partition",
            "2026-09-03",
            "--tag",
            "novalue",
            "--warehouse",
            typo,
        ],
        # Free text: bounded and one line.
        ["close", "case_sla_monthly_report", "2026-09-01", "--by", NL, "--warehouse", w],
        ["close", "case_sla_monthly_report", "2026-09-01", "--note", HUGE, "--warehouse", w],
        ["review", "reject", "r1", "--note", NL, "--warehouse", w],
        ["review", "approve", "r1", "--by", "", "--note", "ok", "--warehouse", w],
        [
            "rollback",
            "case_sla_monthly_report",
            "2026-09-01",
            "--to",
            "1",
            "--reason",
            HUGE,
            "--warehouse",
            w,
        ],
        # The other commands.
        ["impact", "case_events", "--from", "2026-13-01"],
        ["impact", "no_such_asset", "--from", "2026-09-01"],
        ["impact", "case_events", "--from", "2026-09-01", "--url", "file:///etc/passwd"],
        ["impact", "case_events", "--from", "2026-09-01", "--mode", "drop"],
        ["demo-data", "--start", "2026-09-05", "--end", "2026-09-01", "--out", str(tmp / "d")],
        [
            "demo-data",
            "--start",
            "2026-09-01",
            "--end",
            "2026-09-02",
            "--out",
            str(tmp / "d"),
            "--scale",
            "nan",
        ],
        ["review", "dance", "--warehouse", w],
        ["summary", "-m", "no_such_module_xyz"],
        ["frobnicate"],
        [],
        *sync_cases(tmp),
        *demo_source_cases(tmp),
    ]


JOB = "historical-sync-001"


def sync_cases(tmp: Path) -> list[list[str]]:
    """`ecm sync status|run|validate`: unknown jobs, bad job ids and spec directories, options
    of another action, bad warehouses, sources that are missing, empty or unreachable. A run
    refused for any of these creates no warehouse (nor a source database)."""
    typo = str(tmp / "typo.duckdb")
    w = str(tmp / "w.duckdb")
    return [
        ["sync"],
        ["sync", "frob"],
        ["sync", "run"],
        ["sync", "status", "no-such-job", "--warehouse", w],
        ["sync", "run", "no-such-job", "--warehouse", typo],
        ["sync", "validate", "no-such-job"],
        ["sync", "status", "'; DROP TABLE x; --", "--warehouse", w],
        ["sync", "run", HUGE, "--warehouse", typo],
        ["sync", "validate", "--jobs-dir", str(tmp / "no-such-dir")],
        ["sync", "validate", "--jobs-dir", str(tmp / "bad_jobs")],
        ["sync", "status", "--jobs-dir", "/etc/passwd", "--warehouse", w],
        ["sync", "run", JOB, "--jobs-dir", "a\0b", "--warehouse", typo],
        ["sync", "validate", "--full"],
        ["sync", "validate", "--warehouse", w],
        ["sync", "status", "--partition", "00", "--warehouse", w],
        ["sync", "status", "--force", "--warehouse", w],
        ["sync", "run", JOB, "--no-source", "--warehouse", typo],
        ["sync", "status", "--no-source", "--warehouse", typo],
        ["sync", "status", "--no-source", "--warehouse", "/etc/passwd"],
        ["sync", "status", "--no-source", "--warehouse", str(tmp)],
        ["sync", "run", JOB, "--warehouse", "/etc/passwd"],
        ["sync", "run", JOB, "--warehouse", str(tmp)],
        ["sync", "run", JOB, "--warehouse", str(tmp / "no-such-dir" / "w.duckdb")],
        ["sync", "run", JOB, "--partition", "zz", "--warehouse", typo],
        ["sync", "run", JOB, "--partition", NL, "--warehouse", typo],
        # The shipped job's SQLite source ($ECM_DATA_DIR) does not exist: not created.
        ["sync", "run", JOB, "--warehouse", typo],
        ["sync", "run", JOB, "--full", "--warehouse", w],
        # A source without the job's table, and a PostgreSQL source nobody listens on.
        ["sync", "run", JOB, "--jobs-dir", str(tmp / "tableless_jobs"), "--warehouse", typo],
        ["sync", "run", JOB, "--jobs-dir", str(tmp / "unreachable_jobs"), "--warehouse", typo],
    ]


def demo_source_cases(tmp: Path) -> list[list[str]]:
    """`ecm demo-source`: numbers out of range, URLs that are no database of the demo's,
    SQLite paths that are no SQLite file, --keep of a source that is not there."""
    return [
        ["demo-source", "--rows", "-5"],
        ["demo-source", "--rows", "9" * 23],
        ["demo-source", "--rows", "many"],
        ["demo-source", "--seed", "-1"],
        ["demo-source", "--simulate-writes", "--seconds", "nan"],
        ["demo-source", "--simulate-writes", "--seconds", "-1"],
        ["demo-source", "--simulate-writes", "--skew-seconds", "inf"],
        ["demo-source", "--url", "file:///etc/passwd"],
        ["demo-source", "--url", "nope"],
        ["demo-source", "--url", NL],
        ["demo-source", "--url", "mysql://user:secret@127.0.0.1/db"],
        ["demo-source", "--url", f"sqlite:///{tmp}/no-such-dir/s.sqlite"],
        ["demo-source", "--url", f"sqlite:///{tmp}"],
        ["demo-source", "--url", "sqlite:////etc/passwd"],
        ["demo-source", "--url", "postgresql://127.0.0.1:1/nodb"],
        ["demo-source", "--keep", "--url", f"sqlite:///{tmp}/missing.sqlite"],
        ["demo-source", "--keep", "--url", f"sqlite:///{tmp}/tableless.sqlite"],
        ["demo-source", "--keep", "--simulate-writes", "--seconds", "1"],
    ]


def spec_with_source(url: str, connector: str) -> str:
    from ecm_assets.sync.spec import SHIPPED_JOBS_DIR

    spec = json.loads((SHIPPED_JOBS_DIR / f"{JOB}.json").read_text())
    spec["source"] = {**spec["source"], "url": url, "connector": connector}
    return json.dumps(spec)


@pytest.fixture
def sandbox(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty working directory and data dir; one existing, empty DuckDB warehouse."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ECM_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("ECM_WAREHOUSE", raising=False)
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    monkeypatch.delenv("ECM_DEBUG", raising=False)
    monkeypatch.delenv("ECM_SYNC_JOBS_DIR", raising=False)
    duckdb.connect(str(tmp_path / "w.duckdb")).close()
    (tmp_path / "bad_jobs").mkdir()
    (tmp_path / "bad_jobs" / "x.json").write_text("{not json")
    with sqlite3.connect(tmp_path / "tableless.sqlite") as conn:
        conn.execute("CREATE TABLE other (x INTEGER)")
    conn.close()
    for name, url, connector in [
        ("tableless_jobs", f"sqlite:///{tmp_path}/tableless.sqlite", "sqlite"),
        ("unreachable_jobs", "postgresql://127.0.0.1:1/nodb", "postgresql"),
    ]:
        (tmp_path / name).mkdir()
        (tmp_path / name / f"{JOB}.json").write_text(spec_with_source(url, connector))
    return tmp_path


def files(root: Path) -> dict[str, float]:
    return {str(p): p.stat().st_mtime for p in root.rglob("*")}


def test_every_command_with_hostile_arguments_fails_in_one_line_without_side_effects(
    sandbox: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    problems = []
    for argv in hostile_cases(sandbox):
        before = files(sandbox)  # per case, so a file one case creates is blamed on it alone
        capsys.readouterr()
        code = main(argv)
        out, err = capsys.readouterr()
        lines = err.splitlines()
        label = " ".join(argv)[:120]
        if code != 2:
            problems.append(f"{label}: exit {code}, stdout {out[:200]!r}")
        elif len(lines) != 1 or "Traceback" in err or len(err) > 600:
            problems.append(f"{label}: stderr is not one short line: {err[:300]!r}")
        elif files(sandbox) != before:
            problems.append(f"{label}: created or changed {set(files(sandbox)) ^ set(before)}")
    assert not problems, "\n".join(problems)


def test_free_text_errors_do_not_echo_megabytes_or_control_characters(
    sandbox: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["quarantine", "x" * 50_000 + "\0", "2026-09-03", "--warehouse", "w.duckdb"])
    err = capsys.readouterr().err
    assert code == 2 and len(err) < 600 and "\0" not in err and err.count("\n") == 1


def test_a_valid_read_of_an_existing_warehouse_still_works(
    sandbox: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["recover", "--warehouse", "w.duckdb"]) == 0
    assert capsys.readouterr().out.strip() == "(none)"


@pytest.mark.parametrize(
    "argv",
    [
        ["recover", "--warehouse", "typo.duckdb", "--json"],
        ["summary", "--warehouse", "/etc/passwd"],
        ["quarantine", "case_events", "2026-09-03", "--limit", "-1"],
    ],
)
def test_the_installed_ecm_script_fails_cleanly_too(sandbox: Path, argv: list[str]) -> None:
    ecm = Path(sys.executable).with_name("ecm")
    proc = subprocess.run(
        [str(ecm), *argv],
        cwd=sandbox,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "ECM_DATA_DIR": str(sandbox / "data")},
    )
    assert proc.returncode == 2, proc.stderr
    assert len(proc.stderr.splitlines()) == 1 and "Traceback" not in proc.stderr
    assert not (sandbox / "typo.duckdb").exists()
    assert not (sandbox / "data").exists()
