"""What importing cloudq loads: a Lambda cold start pays for every module, so the heavy ones stay out.

Each check runs in a fresh interpreter, since this test process has long imported everything. Timing is
measured by ``python -m bench.coldstart``, never asserted here.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.unit

# Runs argv[1] and prints, as JSON, the top-level packages then loaded and which module first imported each.
# The packages named in argv[2:] behave as if they were not installed.
PROBE = r'''
import json, sys

def importer():
    frame = sys._getframe(2)
    while frame is not None and frame.f_globals.get("__name__", "").startswith(("importlib", "_frozen_importlib")):
        frame = frame.f_back
    return frame.f_globals.get("__name__", "?") if frame is not None else "?"

class Watch:
    def __init__(self, uninstalled):
        self.uninstalled, self.importers = uninstalled, {}

    def find_spec(self, name, path=None, target=None):
        top = name.partition(".")[0]
        if top in self.uninstalled:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        self.importers.setdefault(top, importer())
        return None

watch = Watch(set(sys.argv[2:]))
sys.meta_path.insert(0, watch)
exec(compile(sys.argv[1], "<probe>", "exec"), {"__name__": "__probe__"})
loaded = sorted({name.partition(".")[0] for name in sys.modules})
print(json.dumps({"loaded": loaded, "importers": watch.importers}))
'''

SQS_STACK = ("aioboto3", "aiobotocore", "boto3", "botocore", "tenacity")


def child_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("CLOUDQ_")}


def probe(statement: str, cwd: Path, *, uninstalled: Sequence[str] = ()) -> dict[str, Any]:
    result = subprocess.run(
        [sys.executable, "-c", PROBE, statement, *uninstalled],
        cwd=cwd, env=child_env(), capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    report: dict[str, Any] = json.loads(result.stdout.splitlines()[-1])
    return report


def test_import_cloudq_loads_neither_aws_sdks_nor_pydantic_nor_rich(tmp_path: Path) -> None:
    """``import cloudq`` loads the exceptions only: no AWS SDK, tenacity, pydantic, structlog or rich."""
    loaded = set(probe("import cloudq", tmp_path)["loaded"])

    assert loaded.isdisjoint({*SQS_STACK, "pydantic", "pydantic_settings", "structlog", "rich"}), loaded


def test_version_is_the_installed_metadata_read_on_first_access(tmp_path: Path) -> None:
    """``cloudq.__version__`` is the installed distribution's (pyproject.toml's, the one place it is written),
    and ``import cloudq`` alone does not load importlib.metadata to get it."""
    pyproject = (Path(__file__).resolve().parents[2] / "pyproject.toml").read_text(encoding="utf-8")
    [written] = re.findall(r'^version = "([^"]+)"$', pyproject, re.MULTILINE)
    statement = f"""
import sys
import cloudq
assert "importlib.metadata" not in sys.modules
assert cloudq.__version__ == {written!r}, cloudq.__version__
assert "importlib.metadata" in sys.modules and cloudq.__version__ is cloudq.__dict__["__version__"]
"""
    probe(statement, tmp_path)


def test_public_names_load_their_modules_on_first_access(tmp_path: Path) -> None:
    """``cloudq.Settings`` brings in pydantic-settings then, and every name in ``__all__`` resolves."""
    report = probe("import cloudq\ncloudq.Settings\nfor name in cloudq.__all__: getattr(cloudq, name)", tmp_path)

    assert "pydantic_settings" in report["loaded"]
    assert set(report["loaded"]).isdisjoint({*SQS_STACK, "rich"})


def test_importing_the_example_app_loads_no_sqs_stack_and_rich_only_through_structlog(tmp_path: Path) -> None:
    """Tasks are importable without boto3/aioboto3/tenacity; cloudq itself never imports rich.

    structlog imports rich on its own whenever it is installed (here: the demo extra), which is why rich
    is an extra and not a dependency; what cloudq controls is that no cloudq module asks for it.
    """
    report = probe("import cloudq.examples.shop", tmp_path)

    assert set(report["loaded"]).isdisjoint(SQS_STACK), report["loaded"]
    assert report["importers"].get("rich", "structlog").startswith("structlog."), report["importers"]["rich"]


def test_the_example_app_imports_without_rich(tmp_path: Path) -> None:
    """Without the demo extra (rich not installed), the example app still imports and builds its app."""
    report = probe("import cloudq.examples.shop as shop\nassert shop.app.registry", tmp_path, uninstalled=["rich"])

    assert "rich" not in report["loaded"]


def test_demo_prints_its_report_as_plain_text_without_rich(tmp_path: Path) -> None:
    """``cloudq demo`` without rich: every job settles and the summary has the same lines as with rich."""
    run = "from cloudq.cli import main\nraise SystemExit(main(['demo', '-n', '20']))"
    result = subprocess.run(
        [sys.executable, "-c", PROBE, run, "rich"],
        cwd=tmp_path, env=child_env(), capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip

    assert result.returncode == 0, result.stderr + result.stdout
    out = result.stdout
    assert re.search(r"^\s*processed\s+20 of 20 jobs \(18 succeeded\)", out, re.MULTILINE), out
    assert re.search(r"^\s*dead-lettered\s+1$", out, re.MULTILINE), out
    assert re.search(r"dead letter\s+queue default-dlq: task crm.notify_legacy, rejected", out), out
    assert "cloudq worker cloudq.examples.shop:app" in out
    assert result.stderr == "" and "\x1b" not in out and "\r" not in out


def test_the_lambda_cold_path_loads_no_pydantic_nor_aws_async_stack(tmp_path: Path) -> None:
    """Importing the handler and running a first successful record reads CLOUDQ_* without pydantic (about
    85 ms of a cold start) and builds no aioboto3 client: Lambda deletes what succeeded."""
    first_event = """
import json, os
os.environ.update(CLOUDQ_BROKER="sqs", CLOUDQ_REGION="eu-west-1", CLOUDQ_CONCURRENCY="4", CLOUDQ_LOG_LEVEL="WARNING")
from cloudq.examples.shop_lambda import handler
class Context:
    aws_request_id, function_name = "r-1", "f"
    def get_remaining_time_in_millis(self):
        return 60_000
body = json.dumps({"task": "cloudq.examples.shop.send_welcome_email", "args": ["ada@example.com"]})
record = {"messageId": "m-1", "receiptHandle": "r-1", "body": body, "attributes": {"ApproximateReceiveCount": "1"},
          "messageAttributes": {}, "eventSource": "aws:sqs", "eventSourceARN": "arn:aws:sqs:eu-west-1:1:default"}
assert handler({"Records": [record]}, Context()) == {"batchItemFailures": []}
"""
    loaded = set(probe(first_event, tmp_path, uninstalled=["rich"])["loaded"])

    assert loaded.isdisjoint({"pydantic", "pydantic_settings", "pydantic_core", "aioboto3", "aiobotocore"}), loaded


OBSERVABILITY_STACK = ("opentelemetry", "prometheus_client")


def test_default_settings_import_no_observability_stack_on_the_cold_path(tmp_path: Path) -> None:
    """With CLOUDQ_METRICS unset and no tracer provider, a first Lambda record loads neither OpenTelemetry nor
    prometheus_client, nor cloudq's observability package (both are installed in this venv)."""
    statement = """
import json, os, sys
os.environ.update(CLOUDQ_BROKER="sqs", CLOUDQ_REGION="eu-west-1", CLOUDQ_LOG_LEVEL="WARNING")
from cloudq.examples.shop_lambda import handler
class Context:
    aws_request_id, function_name = "r-1", "f"
    def get_remaining_time_in_millis(self):
        return 60_000
body = json.dumps({"task": "cloudq.examples.shop.send_welcome_email", "args": ["ada@example.com"]})
record = {"messageId": "m-1", "receiptHandle": "r-1", "body": body, "attributes": {"ApproximateReceiveCount": "1"},
          "messageAttributes": {}, "eventSource": "aws:sqs", "eventSourceARN": "arn:aws:sqs:eu-west-1:1:default"}
assert handler({"Records": [record]}, Context()) == {"batchItemFailures": []}
assert "cloudq.observability" not in sys.modules
"""
    loaded = set(probe(statement, tmp_path, uninstalled=["rich"])["loaded"])

    assert loaded.isdisjoint(OBSERVABILITY_STACK), loaded


def test_emf_metrics_load_neither_opentelemetry_nor_prometheus_client(tmp_path: Path) -> None:
    """CLOUDQ_METRICS=emf is the standard library only: the Lambda path stays free of both extras."""
    statement = """
import os
os.environ.update(CLOUDQ_BROKER="memory", CLOUDQ_METRICS="emf")
import cloudq.examples.shop as shop
assert shop.app.metrics is not None
"""
    loaded = set(probe(statement, tmp_path)["loaded"])

    assert loaded.isdisjoint(OBSERVABILITY_STACK), loaded


def test_tracing_and_prometheus_without_their_extras_are_one_line_errors(tmp_path: Path) -> None:
    """CLOUDQ_TRACING=otel without opentelemetry, or CLOUDQ_METRICS=prometheus without prometheus_client: the
    App refuses with a ConfigurationError naming the extra to install."""
    statement = """
import os
import cloudq
for variable, value, extra in (("CLOUDQ_TRACING", "otel", "cloudq[otel]"), ("CLOUDQ_METRICS", "prometheus", "cloudq[prometheus]")):
    try:
        cloudq.App("x", settings=cloudq.Settings(broker="memory", **{variable.removeprefix("CLOUDQ_").lower(): value}))
    except cloudq.ConfigurationError as exc:
        assert extra in str(exc) and "\\n" not in str(exc), exc
    else:
        raise AssertionError(variable)
"""
    probe(statement, tmp_path, uninstalled=list(OBSERVABILITY_STACK))


DASHBOARD_STACK = ("starlette", "jinja2", "uvicorn", "multipart", "python_multipart", "anyio")


def test_the_cli_and_the_dashboard_package_load_no_web_stack_until_the_dashboard_runs(tmp_path: Path) -> None:
    """Building every command's parser (what any ``cloudq`` command does) and ``import cloudq.dashboard``
    load no Starlette, Jinja2 or uvicorn; ``create_app`` does."""
    idle = probe("from cloudq.cli.command import build_parser\nbuild_parser()\nimport cloudq.dashboard", tmp_path)
    assert set(idle["loaded"]).isdisjoint(DASHBOARD_STACK), idle["loaded"]

    running = probe("import cloudq\nfrom cloudq.dashboard import create_app\ncreate_app(cloudq.App('x'))", tmp_path)
    assert {"starlette", "jinja2"} <= set(running["loaded"])


def test_without_the_dashboard_extra_create_app_says_what_to_install(tmp_path: Path) -> None:
    statement = """
import cloudq
from cloudq.dashboard import create_app
from cloudq.errors import ConfigurationError
try:
    create_app(cloudq.App('x'))
except ConfigurationError as exc:
    assert str(exc) == "the dashboard needs the dashboard extra: pip install 'cloudq[dashboard]' (missing: starlette)", exc
else:
    raise AssertionError("no error")
"""
    probe(statement, tmp_path, uninstalled=["starlette"])


def test_signing_and_large_bodies_load_no_aws_sdk_without_a_bucket(tmp_path: Path) -> None:
    """With signing keys but no CLOUDQ_PAYLOAD_BUCKET, a 300 KiB job is signed, sent inline, verified and run
    on the memory broker without importing boto3/botocore: the S3 store loads only with a bucket or a pointer."""
    statement = """
import asyncio, os
os.environ.update(CLOUDQ_BROKER="memory", CLOUDQ_SIGNING_KEYS="k1,k2", CLOUDQ_LOG_LEVEL="WARNING")
import cloudq
from cloudq.runtimes.worker import Worker
app = cloudq.App("p")
ran = []
@app.task(name="t")
def t(blob):
    ran.append(len(blob))
t.delay("x" * 300_000)
asyncio.run(Worker(app, burst=True, burst_wait_s=0).run())
assert ran == [300_000], ran
"""
    loaded = set(probe(statement, tmp_path)["loaded"])

    assert loaded.isdisjoint(SQS_STACK), sorted(loaded & set(SQS_STACK))
