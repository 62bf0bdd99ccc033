"""What a serving process keeps out of its memory: called first in each service's `__main__`."""

from __future__ import annotations

import sys
import types


def keep_unused_modules_out() -> None:
    """httpx imports its command-line client (click, rich, pygments: ~6 MB of RSS) whenever those
    are installed, and they are here (typer, rich and uvicorn bring them). A service never runs
    that client: a stand-in module answers httpx's import before httpx is first imported."""
    if "httpx" in sys.modules:
        return
    stand_in = types.ModuleType("httpx._main", "httpx's command-line client, not loaded in a service")
    stand_in.main = _no_command_line  # type: ignore[attr-defined]
    sys.modules.setdefault("httpx._main", stand_in)


def _no_command_line() -> None:
    raise SystemExit("the httpx command-line client is not loaded in a MedPay service process")
