"""What the AWS Lambda package holds: requirements/lambda.txt's distributions, cloudq and the standard library.

``GUARD`` is Python source for a fresh interpreter that plays the function: run first, it makes every other
top-level module fail to import as if it were not installed (aioboto3, aiobotocore, aiohttp and theirs, rich,
the dev tools), so that what the handler path needs but the package lacks shows as a ModuleNotFoundError.
"""

from __future__ import annotations

import json
import re
from importlib.metadata import packages_distributions
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RUNTIME_LOCK = ROOT / "requirements" / "runtime.txt"
LAMBDA_LOCK = ROOT / "requirements" / "lambda.txt"
LEFT_OUT = ("aioboto3", "aiobotocore", "aiohttp")  # the async stack the Lambda path never imports


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pins(lock: Path) -> dict[str, str]:
    """name -> version of a lock file's ``name==version`` lines."""
    lines = [line.strip() for line in lock.read_text(encoding="utf-8").splitlines()]
    return {canonical(name): version for name, _, version in (line.partition("==") for line in lines if line and not line.startswith("#"))}


def package_modules() -> list[str]:
    """Top-level import names the Lambda package provides: cloudq and its locked distributions' modules."""
    locked = set(pins(LAMBDA_LOCK))
    modules = {module for module, dists in packages_distributions().items() if any(canonical(d) in locked for d in dists)}
    return sorted(modules | {"cloudq"})


GUARD = """
import json as _json, sys as _sys

class _OnlyTheLambdaPackage:
    allowed = frozenset(_json.loads(%r)) | _sys.stdlib_module_names  # Python >= 3.10

    def find_spec(self, name, path=None, target=None):
        top = name.partition(".")[0]
        if top not in self.allowed and not top.startswith("_"):
            raise ModuleNotFoundError(f"No module named {name!r} (not in the Lambda package)", name=name)
        return None

_sys.meta_path.insert(0, _OnlyTheLambdaPackage())
"""


def guard() -> str:
    """GUARD for this machine's installed distributions."""
    return GUARD % json.dumps(package_modules())

