"""Named failpoints in the publish protocol, so crash and error paths are tested for real.

`ECM_FAILPOINTS="publish.after_delete"` raises at that point; `name=kill` SIGKILLs the
process there (used by crash-recovery tests); `name=timeout` raises a TimeoutError, which the
retry policy treats as transient (a step retry). Unset in production, each point costs one
environment lookup.
"""

from __future__ import annotations

import os
import signal

ENV_VAR = "ECM_FAILPOINTS"


class InjectedFault(RuntimeError):
    """Raised at a failpoint enabled through ECM_FAILPOINTS."""


def failpoint(name: str) -> None:
    spec = os.environ.get(ENV_VAR)
    if not spec:
        return
    for item in spec.split(","):
        point, _, action = item.strip().partition("=")
        if point != name:
            continue
        if action == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        if action == "timeout":
            raise TimeoutError(f"injected transient fault at {name}")
        raise InjectedFault(f"injected fault at {name}")
