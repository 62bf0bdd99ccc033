"""The README's test command: every test layer in one pytest run.

Uses the PostgreSQL named by MEDPAY_TEST_DATABASE_URL, else the one at 127.0.0.1:5432 when it
answers, else SQLite (and says so). With CI=true a missing PostgreSQL fails the run. pytest's exit 5
(no tests collected) is a failure here, never a pass.
"""

from __future__ import annotations

import sys

import pytest

NO_TESTS_COLLECTED = 5


def main() -> int:
    code = int(pytest.main(["-q", "-ra", *sys.argv[1:]]))
    if code == NO_TESTS_COLLECTED:
        print("no tests were collected: that is a failure", file=sys.stderr)
        return 1
    return code


if __name__ == "__main__":
    sys.exit(main())
