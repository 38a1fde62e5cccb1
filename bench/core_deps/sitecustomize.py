"""Imported at start-up by the bench's ``cloudq-core`` side (bench/cli_drain.py puts this folder first on
PYTHONPATH): the packages named in ``BENCH_HIDE`` behave as if they were not installed.

Why: the bench's venv carries the dev, bench and demo extras, so rich is installed, and structlog imports
rich whenever it can (40-50 ms of every start-up). The Docker image installs cloudq's core dependencies
only; this side measures the worker as it starts there, in the same run as the others.
"""

import os
import sys

_HIDDEN = frozenset(filter(None, os.environ.get("BENCH_HIDE", "").split(",")))


class _Hidden:
    def find_spec(self, name, path=None, target=None):  # noqa: ANN001, ANN201 - the meta path finder protocol
        if name.split(".")[0] in _HIDDEN:
            raise ModuleNotFoundError(f"No module named {name!r} (hidden by the bench)", name=name)
        return None


if _HIDDEN:
    sys.meta_path.insert(0, _Hidden())
