"""What a new user types wrong, and what ``cloudq`` answers: one line that says what to do, exit 2.

Each case was a traceback, a misleading message or a silent success before (issue 11, "CLI and settings").
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from structlog.testing import capture_logs

import cloudq
from cloudq.aws import clients
from cloudq.cli import build_parser, main
from cloudq.cli import jobs as cli_jobs
from cloudq.examples import shop
from cloudq.cli import runtimes as cli_runtimes
from cloudq.cli.loading import warn_if_default_region
from tests.unit.cli_env import APP, local, run_cli  # noqa: F401 - local is a fixture

pytestmark = pytest.mark.unit

TASK = "cloudq.examples.shop.send_welcome_email"
USAGE = "usage: cloudq enqueue [APP] TASK [--args JSON] [--kwargs JSON] [--delay SECONDS] [--queue QUEUE] [--allow-unknown]"


def parse_error(argv: list[str], capsys: pytest.CaptureFixture[str]) -> list[str]:
    """argparse's own error: exit 2, the usage, then one ``error:`` line; returns stderr's lines."""
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err.count("error:") == 1 and "Traceback" not in err
    return err.splitlines()


# -- enqueue ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("delay", ["nan", "inf", "-inf", "1e12", "-1", "31622401"])
def test_enqueue_refuses_a_delay_that_is_no_usable_number(capsys: pytest.CaptureFixture[str], delay: str) -> None:
    """``--delay nan`` (inf, 1e12, negative) was a traceback; now it is refused before any app loads."""
    lines = parse_error(["enqueue", APP, TASK, f"--delay={delay}"], capsys)  # "--delay -inf" reads as an option
    assert lines[-1] == f"cloudq enqueue: error: argument --delay: must be 0..31622400 seconds (366 days), got {delay}"


def test_enqueue_takes_a_delay_up_to_the_limit(local: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Zero, a fraction and a delay far beyond SQS's 15 minutes (an ETA) all enqueue."""
    for delay in ("0", "2.5", "31622400"):
        assert main(["enqueue", APP, TASK, "--args", '["a@b.c"]', "--delay", delay]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 3


def test_enqueue_refuses_an_unknown_task_naming_close_matches(local: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A typo in the task name was accepted (exit 0) and dead-lettered later as unknown_task."""
    assert main(["enqueue", APP, "shop.send_welcome_emial"]) == 2
    err = capsys.readouterr().err
    assert err == (
        "cloudq: error: no task named 'shop.send_welcome_emial' is registered in app 'shop';"
        f" did you mean {TASK!r}? (pass --allow-unknown to enqueue a task that another service registers)\n"
    )
    assert main(["enqueue", APP, "no.such.task"]) == 2
    assert "did you mean" not in capsys.readouterr().err
    assert not (local / "q.db").exists() or shop.app.broker.stats("default").visible == 0


def test_allow_unknown_enqueues_a_task_another_service_registers(local: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``--allow-unknown`` keeps the cross-service path: the job goes to the default queue as before."""
    assert main(["enqueue", APP, "no.such.task", "--allow-unknown", "--args", "[1]"]) == 0
    ref = json.loads(capsys.readouterr().out)
    assert (ref["task"], ref["queue"]) == ("no.such.task", "default")


def test_app_enqueue_by_an_unregistered_name_keeps_working(local: Path) -> None:
    """``app.enqueue`` on an app with tasks still sends a name it does not register (another service's task)."""
    app = cloudq.App("producer")

    @app.task
    def mine() -> None: ...

    ref = app.enqueue("billing.charge", "c1", 100)
    assert (ref.task, ref.queue) == ("billing.charge", "default")
    [delivery] = app.broker.peek("default")
    assert json.loads(delivery.body)["args"] == ["c1", 100]
    app.close()


def test_enqueue_with_the_app_but_no_task_says_the_task_is_missing(local: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``cloudq enqueue APP`` said "no app given"; the one name reads as an APP, so the task is missing."""
    lines = parse_error(["enqueue", APP], capsys)
    assert lines == [USAGE, f"cloudq enqueue: error: no task given: expected [APP] TASK after the app {APP!r}"]


def test_enqueue_with_an_extra_name_is_argparse_s_usual_error(capsys: pytest.CaptureFixture[str]) -> None:
    """An extra positional printed a bare line; now the usage, then the error, exit 2."""
    lines = parse_error(["enqueue", APP, TASK, "extra"], capsys)
    assert lines == [USAGE, f"cloudq enqueue: error: expected [APP] TASK, got 3 names: {APP} {TASK} extra"]


def test_enqueue_help_shows_app_and_task_once() -> None:
    """The usage line read ``[APP] TASK [[APP] TASK ...]``."""
    text = build_parser()._subparsers._group_actions[0].choices["enqueue"].format_help()  # type: ignore[union-attr]
    assert text.splitlines()[0] == USAGE and "[[APP] TASK" not in text


def test_one_name_with_cloudq_app_set_is_the_task(local: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """With $CLOUDQ_APP, a single name is the task, as before."""
    monkeypatch.setenv("CLOUDQ_APP", APP)
    assert main(["enqueue", TASK, "--args", '["a@b.c"]']) == 0
    assert json.loads(capsys.readouterr().out)["task"] == TASK


# -- loading the app --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("import cloudq\napp = cloudq.App('x'\n", "SyntaxError: '(' was never closed ({path}, line 2)"),
        ("import cloudq\n\napp = cloudq.App('x')\n1 / 0\n", "ZeroDivisionError: division by zero ({path}, line 4)"),
        ("import os\nos.environ['NOPE']\n", "KeyError: 'NOPE' ({path}, line 2)"),
        ("import no_such_dependency\n", "No module named 'no_such_dependency'"),
    ],
)
def test_an_app_module_that_fails_to_import_is_one_line_naming_file_and_line(
    local: Path, capsys: pytest.CaptureFixture[str], source: str, message: str
) -> None:
    """A SyntaxError or any exception at import was a traceback and exit 1; now one line, exit 2."""
    name = f"broken_{abs(hash(source))}"
    (local / f"{name}.py").write_text(source)
    assert main(["worker", f"{name}:app"]) == 2
    err = capsys.readouterr().err
    assert err == f"cloudq: error: cannot import app module {name!r}: {message.format(path=local / f'{name}.py')}\n"
    sys.modules.pop(name, None)


def test_traceback_flag_prints_the_whole_chain_then_the_same_line(local: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``cloudq --traceback`` shows the app's own frames, then the one-line error; the exit code is unchanged."""
    (local / "boom.py").write_text("def explode():\n    raise RuntimeError('at import')\n\nexplode()\n")
    assert main(["--traceback", "status", "boom:app"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("Traceback (most recent call last):") and 'boom.py", line 2, in explode' in err
    assert err.splitlines()[-1] == f"cloudq: error: cannot import app module 'boom': RuntimeError: at import ({local / 'boom.py'}, line 2)"
    sys.modules.pop("boom", None)


def test_a_missing_attribute_is_named_with_the_apps_the_module_has(capsys: pytest.CaptureFixture[str]) -> None:
    """``cloudq worker mod:nope`` said "is not a cloudq.App (got NoneType)"."""
    assert main(["worker", "cloudq.examples.shop:nope"]) == 2
    assert capsys.readouterr().err == "cloudq: error: module 'cloudq.examples.shop' has no attribute 'nope'; its cloudq.App: app\n"


def test_a_local_path_that_cannot_be_created_is_one_line(tmp_path: Path) -> None:
    """``CLOUDQ_LOCAL_PATH=/proc/nope/x.db cloudq status APP`` was a traceback."""
    out = run_cli("status", APP, cwd=tmp_path, CLOUDQ_LOCAL_PATH="/proc/nope/x.db")
    assert out.returncode == 1 and out.stdout == ""
    assert out.stderr == "cloudq: FileNotFoundError: No such file or directory: /proc/nope\n"


# -- version ----------------------------------------------------------------------------------------
def test_version_prints_the_installed_version(tmp_path: Path) -> None:
    """``cloudq --version`` exits 0 with the distribution's version."""
    from importlib.metadata import version

    out = run_cli("--version", cwd=tmp_path)
    assert out.returncode == 0 and out.stdout == f"cloudq {version('cloudq')}\n"


def test_version_falls_back_to_the_package_attribute(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """A source tree that is not installed has no metadata: ``cloudq.__version__`` answers."""
    import importlib.metadata

    def not_installed(name: str) -> str:
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "version", not_installed)
    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0 and capsys.readouterr().out == f"cloudq {cloudq.__version__}\n"


# -- the region on real AWS -------------------------------------------------------------------------
def settings_of(broker: str = "sqs", region: str | None = None, endpoint_url: str | None = None) -> SimpleNamespace:
    return SimpleNamespace(settings=SimpleNamespace(broker=broker, region=region, endpoint_url=endpoint_url))


@pytest.fixture
def no_region(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_REGION", raising=False)
    monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)


def test_region_is_default_only_when_none_is_set_anywhere(no_region: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """The settings, AWS_REGION and AWS_DEFAULT_REGION each count as configured."""
    assert clients.region_is_default(settings_of().settings)
    assert not clients.region_is_default(settings_of(region="eu-west-1").settings)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    assert not clients.region_is_default(settings_of().settings)


def test_no_region_on_real_aws_warns_that_us_east_1_is_used(no_region: None) -> None:
    """SQS silently used us-east-1: a queue in another region looked missing."""
    with capture_logs() as logs:
        warn_if_default_region(settings_of())
    assert [(e["event"], e["log_level"], e["region"]) for e in logs] == [("aws.region_defaulted", "warning", "us-east-1")]
    assert "CLOUDQ_REGION" in logs[0]["hint"]


@pytest.mark.parametrize(
    "app",
    [
        settings_of(endpoint_url="http://127.0.0.1:4566"),  # LocalStack ignores the region: stays silent
        settings_of(region="eu-west-1"),
        settings_of(broker="local"),
    ],
)
def test_no_warning_for_localstack_a_set_region_or_another_broker(no_region: None, app: SimpleNamespace) -> None:
    with capture_logs() as logs:
        warn_if_default_region(app)
    assert logs == []


def test_worker_and_enqueue_check_the_region_at_start(local: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Both commands that reach SQS at once call the check with the app they loaded."""
    seen = []
    monkeypatch.setattr(cli_jobs, "warn_if_default_region", lambda app: seen.append(("enqueue", app.name)))
    monkeypatch.setattr(cli_runtimes, "warn_if_default_region", lambda app: seen.append(("worker", app.name)))
    assert main(["enqueue", APP, TASK, "--args", '["a@b.c"]']) == 0
    assert main(["worker", APP, "--burst"]) == 0
    assert seen == [("enqueue", "shop"), ("worker", "shop")]
