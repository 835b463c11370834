"""Which failures a retry can cure, and the retry policy every asset carries.

A retry helps only when the cause is gone a moment later: a landing file still being copied or
briefly locked by a scanner, a network share that hiccups. Bad input, a failed quality gate, a
contract violation or a closed period fail the same way every time, so retrying them only
delays the alert and repeats the work; they are raised as `dg.Failure(allow_retries=False)`.
A warehouse lock is waited for, with backoff, inside the connection itself (see
adapters/warehouse.py). Past that deadline the holder may still go away (a reader someone
left open, a long run finishing), so WarehouseLockedError is retried by this policy too: the
wait is bounded by (retries + 1) x lock_timeout_seconds plus the backoff, then the run fails
naming the holder.
"""

from __future__ import annotations

from typing import NoReturn

import dagster as dg

from ecm_assets.adapters.landing import LandingFileChangedError
from ecm_assets.adapters.warehouse import WarehouseLockedError

#: Exponential backoff (2s, 4s, 8s) with +/- jitter so retries of a backfill's runs do not
#: hit the source in lockstep.
RETRY_POLICY = dg.RetryPolicy(
    max_retries=3,
    delay=2.0,
    backoff=dg.Backoff.EXPONENTIAL,
    jitter=dg.Jitter.PLUS_MINUS,
)


class TransientSourceError(OSError):
    """A source that was readable a moment ago is not right now; a retry may succeed."""


_TRANSIENT_OS_ERRORS = (
    PermissionError,  # a writer or virus scanner holds the file
    BlockingIOError,  # a lock that would block
    TimeoutError,
    InterruptedError,
    ConnectionError,  # network shares and object stores
    LandingFileChangedError,  # a writer was still writing: the retry locks the final bytes
    WarehouseLockedError,  # another process held the warehouse past the deadline
)


def is_transient(exc: BaseException) -> bool:
    """Whether `exc`, or an error it was raised from, is worth retrying."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, (TransientSourceError, *_TRANSIENT_OS_ERRORS)):
            return True
        current = current.__cause__ or current.__context__
    return False


def non_retryable(exc: BaseException, what: str) -> dg.Failure:
    """`exc` as a Failure that Dagster's retry policy leaves alone, keeping its text."""
    return dg.Failure(
        description=f"{what}: {type(exc).__name__}: {exc}",
        metadata={"error_class": type(exc).__name__, "retryable": False},
        allow_retries=False,
    )


def raise_for_retry_policy(exc: Exception, what: str) -> NoReturn:
    """Re-raise `exc` so Dagster's retry policy retries exactly the transient errors: a
    Failure or a transient error as it is, anything else as a non-retryable Failure."""
    if isinstance(exc, dg.Failure) or is_transient(exc):
        raise exc
    raise non_retryable(exc, what) from exc
