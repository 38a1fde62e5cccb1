"""A clean environment for CLI tests that run the example app (``cloudq.examples.shop:app``).

The example's App reads ``CLOUDQ_*`` once, when its module is first imported (by whichever test came
first), so in-process tests would otherwise send to that test's file: :func:`local` points the imported
app at this test's own broker file, and puts the settings it had back afterwards.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from cloudq.examples import shop
from cloudq.settings_env import load_settings

APP = "cloudq.examples.shop:app"


@pytest.fixture
def local(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A fresh local broker file in a working directory of the test's own, with no CLOUDQ_* from outside."""
    for name in [n for n in os.environ if n.startswith("CLOUDQ_")]:
        monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("CLOUDQ_LOCAL_PATH", str(tmp_path / "q.db"))
    monkeypatch.setenv("CLOUDQ_WAIT_TIME_S", "1")
    before = shop.app.settings
    shop.app.settings = load_settings()
    shop.app.use_broker(None)
    yield tmp_path
    shop.app.close()
    shop.app.settings = before
    shop.app.use_broker(None)


def run_cli(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """``python -m cloudq`` as a user runs it, with only the CLOUDQ_* variables given here."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("CLOUDQ_")}
    return subprocess.run([sys.executable, "-m", "cloudq", *args], cwd=cwd, env={**base, **env}, capture_output=True, text=True, timeout=60)
