"""The run state machine. A status only moves forward; illegal moves raise.

PLANNED -> INPUT_LOCKED -> RUNNING -> VALIDATING -> COMMITTING -> PUBLISHED
The quality gate may stop at VALIDATING -> HELD (manual review): `ecm review approve` resumes
HELD -> RUNNING and publishes exactly the held rows; `ecm review reject` ends it REJECTED.
Backfill modes that publish nothing end at VALIDATING -> VALIDATED (dry_run, compare_only:
judged and diffed, manifest only) or VALIDATING -> SHADOWED (shadow: written to the shadow
schema that consumers do not read).
Any live state may end FAILED. A process that dies after staging began leaves RUNNING,
VALIDATING or COMMITTING behind; recovery marks such a run UNKNOWN while it inspects durable
state, then resolves it to PUBLISHED or FAILED (or leaves it UNKNOWN for a human).
"""

from __future__ import annotations

from enum import StrEnum


class RunStatus(StrEnum):
    PLANNED = "PLANNED"
    INPUT_LOCKED = "INPUT_LOCKED"
    RUNNING = "RUNNING"
    VALIDATING = "VALIDATING"
    COMMITTING = "COMMITTING"
    PUBLISHED = "PUBLISHED"
    FAILED = "FAILED"
    UNKNOWN = "UNKNOWN"
    HELD = "HELD"
    REJECTED = "REJECTED"
    VALIDATED = "VALIDATED"
    SHADOWED = "SHADOWED"


LEGAL_TRANSITIONS: dict[RunStatus, frozenset[RunStatus]] = {
    RunStatus.PLANNED: frozenset({RunStatus.INPUT_LOCKED, RunStatus.FAILED}),
    RunStatus.INPUT_LOCKED: frozenset({RunStatus.RUNNING, RunStatus.FAILED}),
    RunStatus.RUNNING: frozenset({RunStatus.VALIDATING, RunStatus.FAILED, RunStatus.UNKNOWN}),
    RunStatus.VALIDATING: frozenset(
        {
            RunStatus.COMMITTING,
            RunStatus.HELD,
            RunStatus.VALIDATED,
            RunStatus.SHADOWED,
            RunStatus.FAILED,
            RunStatus.UNKNOWN,
        }
    ),
    RunStatus.HELD: frozenset({RunStatus.RUNNING, RunStatus.REJECTED, RunStatus.FAILED}),
    RunStatus.COMMITTING: frozenset({RunStatus.PUBLISHED, RunStatus.FAILED, RunStatus.UNKNOWN}),
    RunStatus.UNKNOWN: frozenset({RunStatus.PUBLISHED, RunStatus.FAILED}),
    RunStatus.PUBLISHED: frozenset(),
    RunStatus.FAILED: frozenset(),
    RunStatus.REJECTED: frozenset(),
    RunStatus.VALIDATED: frozenset(),
    RunStatus.SHADOWED: frozenset(),
}

#: States a dead process can leave behind with output possibly staged or half-committed.
IN_FLIGHT = frozenset(
    {RunStatus.RUNNING, RunStatus.VALIDATING, RunStatus.COMMITTING, RunStatus.UNKNOWN}
)
#: Every state a live attempt passes through: recovery settles any of them whose lease died
#: (PLANNED and INPUT_LOCKED too: a process killed before staging still leaves a manifest).
UNSETTLED = IN_FLIGHT | {RunStatus.PLANNED, RunStatus.INPUT_LOCKED}
TERMINAL = frozenset(
    {
        RunStatus.PUBLISHED,
        RunStatus.FAILED,
        RunStatus.REJECTED,
        RunStatus.VALIDATED,
        RunStatus.SHADOWED,
    }
)


class IllegalTransitionError(RuntimeError):
    """A manifest was asked to move to a status its current status cannot reach."""


def check_transition(current: RunStatus | str, target: RunStatus | str) -> RunStatus:
    current, target = RunStatus(current), RunStatus(target)
    if target not in LEGAL_TRANSITIONS[current]:
        allowed = ", ".join(sorted(LEGAL_TRANSITIONS[current])) or "nothing (terminal)"
        raise IllegalTransitionError(
            f"run status cannot move from {current} to {target}; from {current} it may move to "
            f"{allowed}"
        )
    return target
