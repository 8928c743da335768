"""Scratch folders of interrupted saves are cleaned at start, never those of a live save.

Issue 17 #10: a ``kill -9`` during ``save_run`` left ``.tmp-<run>-…`` in the registry forever.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from core import registry, scratch_dirs

REPO = Path(__file__).resolve().parents[1]


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def make_scratch(base: Path, run: str, pid: int | None, age_s: float = 0.0) -> Path:
    """A scratch folder as save_run makes it (pid None: the old naming without an owner)."""
    prefix = scratch_dirs.scratch_prefix(run, pid) if pid else f".tmp-{run}-"
    path = base / f"{prefix}abcd_123"
    path.mkdir(parents=True)
    (path / "config.json").write_text("{}")
    if age_s:
        then = time.time() - age_s
        for p in (path / "config.json", path):
            os.utime(p, (then, then))
    return path


@pytest.fixture
def sleeper():
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    yield proc
    proc.kill()
    proc.wait()


def test_save_run_names_its_scratch_after_its_process():
    prefix = scratch_dirs.scratch_prefix("myrun")
    assert scratch_dirs.owner(prefix + "x1y2_z3w") == (os.getpid(), scratch_dirs.host_tag())
    assert scratch_dirs.owner(".tmp-myrun-abcdefgh") is None  # the old naming


def test_staleness_rules(tmp_path, sleeper):
    live = make_scratch(tmp_path, "live", sleeper.pid)
    dead = make_scratch(tmp_path, "dead", dead_pid())
    old_style_fresh = make_scratch(tmp_path, "legacy", None)
    old_style_old = make_scratch(tmp_path, "legacy-old", None, age_s=7 * 3600)
    live_but_silent = make_scratch(tmp_path, "silent", sleeper.pid, age_s=7 * 3600)
    assert not scratch_dirs.is_stale(live)  # a save in progress in another process
    assert scratch_dirs.is_stale(dead)  # its process is gone: removed at once
    assert not scratch_dirs.is_stale(old_style_fresh)  # unknown owner, recent: maybe live
    assert scratch_dirs.is_stale(old_style_old)
    assert scratch_dirs.is_stale(live_but_silent)  # pid reused by something else; 6 h quiet
    # another machine's pid cannot be checked here: only its age counts
    other = tmp_path / f".tmp-remote-{dead_pid()}@00000000-abcd_123"
    other.mkdir()
    assert scratch_dirs.host_tag() != "00000000"
    assert not scratch_dirs.is_stale(other)


def test_clean_scratch_keeps_a_live_save_and_removes_a_killed_one(tmp_path, sleeper):
    live = make_scratch(tmp_path, "live", sleeper.pid)
    dead = make_scratch(tmp_path, "dead", dead_pid())
    run = tmp_path / "a-run"
    run.mkdir()
    assert registry.clean_scratch(tmp_path) == [dead.name]
    assert live.is_dir() and run.is_dir()
    sleeper.kill()
    sleeper.wait()  # reaped: the pid no longer exists
    assert registry.clean_scratch(tmp_path) == [live.name]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-run"]
    assert registry.clean_scratch(tmp_path / "missing") == []


def _env(registry_dir: Path, tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "TRAINED_MODELS_DIR": str(registry_dir),
            "JOBS_DB": str(tmp_path / "var" / "jobs.sqlite"),
            "PYTHONPATH": str(REPO),
            "CUDA_VISIBLE_DEVICES": "",
        }
    )
    return env


def test_worker_start_removes_stale_scratch_only(tmp_path, sleeper):
    reg = tmp_path / "trained_models"
    stale = make_scratch(reg, "killed-mid-save", dead_pid())
    live = make_scratch(reg, "saving-now", sleeper.pid)
    result = subprocess.run(
        [sys.executable, "-m", "core.jobs", "worker", "--drain"],
        cwd=REPO,
        env=_env(reg, tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert not stale.exists(), result.stdout
    assert live.is_dir()
    assert stale.name in result.stdout  # the worker log says what it removed


def test_train_cli_start_removes_stale_scratch_only(tmp_path, sleeper):
    reg = tmp_path / "trained_models"
    stale = make_scratch(reg, "killed-mid-save", dead_pid())
    live = make_scratch(reg, "saving-now", sleeper.pid)
    (reg / "taken").mkdir()
    # a taken --name stops the command right after its start-up checks: no training
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "core.train",
            "--dataset",
            "retinamnist",
            "--model",
            "cnn2d",
            "--name",
            "taken",
            "--output",
            str(reg),
        ],
        cwd=REPO,
        env=_env(reg, tmp_path),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2 and "already exists" in result.stderr, result.stderr
    assert not stale.exists()
    assert live.is_dir()
    assert stale.name in result.stderr
