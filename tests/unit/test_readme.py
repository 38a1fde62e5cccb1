"""README.md, which is also the package's page on PyPI: its settings table is complete and its links work there.

PyPI shows the README without the repository around it, so a relative link (``bench/README.md``) leads nowhere:
every link is absolute, and those into the repository use pyproject.toml's Repository URL (a placeholder until
the project has a public home) and name a file that exists.
"""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

import pytest

from cloudq.settings_fields import SETTINGS

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text(encoding="utf-8")
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
REPOSITORY = PROJECT["urls"]["Repository"]
NOT_SETTINGS = {"CLOUDQ_APP"}  # the CLI's default APP, not a field of cloudq.Settings
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def settings_table() -> dict[str, str]:
    """Variable -> its default cell, from the table headed ``| variable | default | meaning |``."""
    rows = README.split("| variable | default | meaning |\n", 1)[1].split("\n\n", 1)[0].splitlines()[1:]
    table: dict[str, str] = {}
    for row in rows:
        names, default = (cell.strip() for cell in row.strip("|").split("|")[:2])
        variables = re.findall(r"`(CLOUDQ_[A-Z0-9_]+)`", names)
        defaults = re.findall(r"`([^`]*)`", default)
        for n, variable in enumerate(variables):  # `A` / `B` | `1` / `2`: the defaults pair up with the names
            table[variable] = defaults[n] if len(defaults) == len(variables) else default
    return table


def shown(value: object) -> str:
    """A default as the table writes it: 2.0 as 2, 0.05 as 0.05, {} as {}."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:g}"
    return json.dumps(value) if isinstance(value, dict) else str(value)


def test_every_setting_is_in_the_settings_table() -> None:
    """Each field of cloudq/settings_fields.py has its row, and the table names no variable that is not one."""
    table = settings_table()
    fields = {row.env_name for row in SETTINGS.values()}
    assert sorted(fields - set(table)) == [], "add these to the README's settings table"
    assert sorted(set(table) - fields - NOT_SETTINGS) == [], "the README's settings table names variables that are no setting"


def test_the_table_shows_each_default() -> None:
    """A setting with a default value shows it; one without (None, empty) says so in words."""
    table = settings_table()
    for row in SETTINGS.values():
        default = row.default_value()
        if default in (None, ""):
            assert "`" not in table[row.env_name] or "AWS_" in table[row.env_name], row.env_name
        else:
            assert table[row.env_name] == shown(default), (row.env_name, table[row.env_name], default)


def anchors(markdown: str) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces as hyphens."""
    headings = re.findall(r"^#+ (.+)$", markdown, re.MULTILINE)
    return {re.sub(r"[^a-z0-9 _-]", "", heading.lower()).replace(" ", "-") for heading in headings}


def test_links_are_absolute_and_into_the_repository_they_name_files_that_exist() -> None:
    """No relative link; a repository link is <Repository>/blob/main/<existing file>[#<existing heading>]."""
    links = LINK.findall(README)
    assert links and not [link for link in links if not link.startswith(("https://", "#"))]
    for link in links:
        if link.startswith("#"):
            assert link[1:] in anchors(README), link
        elif link.startswith(REPOSITORY):
            path, _, fragment = link.removeprefix(f"{REPOSITORY}/blob/main/").partition("#")
            assert (ROOT / path).is_file(), link
            assert not fragment or fragment in anchors((ROOT / path).read_text(encoding="utf-8")), link
    assert f"{REPOSITORY}/blob/main/LICENSE" in links


def test_project_urls_all_point_at_the_one_repository() -> None:
    """Every project URL is under the Repository URL, so changing the placeholder is one search and replace."""
    assert PROJECT["license"] == "Apache-2.0" and PROJECT["license-files"] == ["LICENSE"]
    assert (ROOT / "LICENSE").read_text(encoding="utf-8").lstrip().startswith("Apache License")
    assert all(url.startswith(REPOSITORY) for url in PROJECT["urls"].values()), PROJECT["urls"]
    assert "Programming Language :: Python :: 3.10" in PROJECT["classifiers"] and PROJECT["requires-python"] == ">=3.10"
