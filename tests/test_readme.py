"""The README stays true: every CNNSee option is documented, every linked image exists."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

from lightning_cnnsee import CNNSee

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def test_every_option_has_a_row_in_the_readme_options_table():
    options = [name for name in inspect.signature(CNNSee.__init__).parameters if name != "self"]
    missing = [name for name in options if f"| `{name}` |" not in README]
    assert not missing


def test_every_option_has_a_type_annotation():
    parameters = inspect.signature(CNNSee.__init__).parameters.values()
    assert all(p.annotation is not inspect.Parameter.empty for p in parameters if p.name != "self")


def test_every_image_the_readme_shows_is_in_the_repository():
    images = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", README)
    assert images
    assert [path for path in images if not (ROOT / path).is_file()] == []


def test_the_readme_install_and_test_commands_are_what_ci_runs():
    ci = (ROOT / ".ci" / "run").read_text()
    assert 'pip install -e ".[dev]"' in README and 'pip install -e ".[dev]"' in ci
    assert re.search(r"^pytest$", README, re.M) and re.search(r"^pytest$", ci, re.M)
