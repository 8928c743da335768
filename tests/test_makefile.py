"""The README's quick start is two commands: ``make run`` and ``make test`` on a fresh clone.

Each must do whatever set-up is missing (the virtual environment; for the tests also the
browser) instead of failing on a missing ``.venv/bin/…``. ``make -n`` prints what make would
run without running it, against a virtual-environment folder that does not exist.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")


def dry_run(target: str, venv: Path) -> list[str]:
    out = subprocess.run(
        ["make", "-n", target, f"VENV={venv}"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.splitlines()


def _index(lines: list[str], needle: str) -> int:
    hits = [i for i, line in enumerate(lines) if needle in line]
    assert hits, f"{needle!r} not in the dry run:\n" + "\n".join(lines)
    return hits[0]


@pytest.mark.parametrize("target", ["run", "serve-proxy", "test", "lint", "test-fast"])
def test_fresh_clone_targets_create_the_venv_first(target, tmp_path):
    venv = tmp_path / "fresh-venv"
    lines = dry_run(target, venv)
    create = _index(lines, f"-m venv {venv}")
    install = _index(lines, "pip install -r requirements.txt")
    assert create < install
    first_use = min(
        i for i, line in enumerate(lines) if f"{venv}/bin/" in line and "pip" not in line
    )
    assert install < first_use, "a tool of the venv is used before the venv is installed"


def test_make_test_installs_the_browser_before_the_suite(tmp_path):
    lines = dry_run("test", tmp_path / "fresh-venv")
    assert _index(lines, "command -v chromium") < _index(lines, "-m pytest")


def test_make_test_installs_pdftotext_before_the_suite(tmp_path):
    # the PDF report test reads the printed text with pdftotext (Debian's poppler-utils)
    lines = dry_run("test", tmp_path / "fresh-venv")
    assert _index(lines, "command -v pdftotext") < _index(lines, "-m pytest")
    assert _index(lines, "install -y -q chromium poppler-utils") < _index(lines, "-m pytest")


def test_make_test_installs_nginx_before_the_suite(tmp_path):
    # tests/test_proxy.py starts a real nginx in front of the app
    lines = dry_run("test", tmp_path / "fresh-venv")
    assert _index(lines, "[ -x /usr/sbin/nginx ]") < _index(lines, "-m pytest")
    assert _index(lines, "poppler-utils nginx-light") < _index(lines, "-m pytest")
