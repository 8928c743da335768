"""Every ``python -m core.…`` command × every kind of bad input: one ``error:`` line, exit 2.

Each row runs the command as a user does (a subprocess from the repo root) against a damaged
copy of a shipped run, a missing or foreign path, a bad flag value, a database that is not
SQLite or a dataset that cannot be downloaded (no network: a proxy on a closed port). It asserts
the policy of :mod:`core.cli`: exit status 2, the last non-empty line of stderr starts with
``error:``, no traceback, and the line names the file at fault; with ``--debug`` the traceback
is printed too.

Rows whose command imports TensorFlow (evaluate/explain/quantize on a damaged model, train)
cost 5-10 s each and are marked ``slow`` (CI runs them). The in-process tests at the bottom
check the registry functions the CLIs rely on, at the depth where the file is read.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from conftest import real_root, require_real_file

from core import cli, registry

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "trained_models" / "cnn2d_aug"  # a small retinamnist cnn2d run (1.3 MB)
# a proxy on a closed local port: every download fails at once, with or without internet
OFFLINE = {"http_proxy": "http://127.0.0.1:9", "https_proxy": "http://127.0.0.1:9", "no_proxy": ""}
LONG_PASSWORD = "a long enough password\n"


@dataclass(frozen=True)
class Row:
    """One command × one bad input.

    Attributes:
        id: test id.
        module: ``core.<x>``.
        args: arguments; ``{base}``, ``{reg}`` (the tmp registry) and ``{db}`` are filled in.
        names: substrings the ``error:`` line must contain (the file at fault, the flag).
        env: extra environment (same placeholders).
        stdin: text fed to the command.
        tf: the command imports TensorFlow before failing (slow).
        data: the command reads the real RetinaMNIST file before reaching the fault.
        debug: the failure is an exception, so ``--debug`` must show its traceback
            (argparse usage errors have none).
        xfail: reason, for a row another change still has to fix.
    """

    id: str
    module: str
    args: tuple[str, ...]
    names: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    stdin: str = ""
    tf: bool = False
    data: bool = False
    debug: bool = True
    xfail: str = ""


ROWS = [
    # -- core.evaluate: run dirs -------------------------------------------------------------
    Row("evaluate-missing-dir", "core.evaluate", ("{base}/nothing",), ("{base}/nothing",)),
    Row("evaluate-dir-not-a-run", "core.evaluate", ("{base}/not_a_run",), ("not_a_run",)),
    Row("evaluate-name-not-in-registry", "core.evaluate", ("no_such_run",), ("no_such_run",)),
    Row("evaluate-name-leaves-registry", "core.evaluate", ("..",), ("invalid run name",)),
    Row(
        "evaluate-config-not-json",
        "core.evaluate",
        ("{reg}/config_not_json",),
        ("{reg}/config_not_json/config.json",),
    ),
    Row(
        "evaluate-config-missing-fields",
        "core.evaluate",
        ("config_missing_fields",),
        ("{reg}/config_missing_fields/config.json", "dataset"),
    ),
    Row(
        "evaluate-metrics-not-json",
        "core.evaluate",
        ("metrics_not_json",),
        ("{reg}/metrics_not_json/metrics.json",),
    ),
    Row(
        "evaluate-only-metrics",
        "core.evaluate",
        ("{reg}/only_metrics",),
        ("{reg}/only_metrics", "config.json"),
    ),
    Row(
        "evaluate-bad-split",
        "core.evaluate",
        ("only_metrics", "--split", "nope"),
        ("--split",),
        debug=False,
    ),
    # -- core.evaluate/explain/quantize on a damaged model (TensorFlow) ----------------------
    Row(
        "evaluate-random-bytes-model",
        "core.evaluate",
        ("{reg}/random_model",),
        ("{reg}/random_model/model.keras",),
        tf=True,
        data=True,
    ),
    Row(
        "evaluate-truncated-model",
        "core.evaluate",
        ("truncated_model",),
        ("{reg}/truncated_model/model.keras",),
        tf=True,
        data=True,
    ),
    Row(
        "explain-random-bytes-model",
        "core.explain",
        ("{reg}/random_model", "--n", "2"),
        ("{reg}/random_model/model.keras",),
        tf=True,
        data=True,
    ),
    Row(
        "explain-config-not-json",
        "core.explain",
        ("{reg}/config_not_json",),
        ("{reg}/config_not_json/config.json",),
        tf=True,
    ),
    Row(
        "quantize-truncated-model",
        "core.quantize",
        ("truncated_model", "--modes", "dynamic"),
        ("{reg}/truncated_model/model.keras",),
        tf=True,
        data=True,
    ),
    Row(
        "quantize-only-metrics",
        "core.quantize",
        ("{reg}/only_metrics",),
        ("{reg}/only_metrics", "config.json"),
        tf=True,
    ),
    # -- core.train: flags, and a dataset that cannot be downloaded --------------------------
    Row(
        "train-unknown-dataset",
        "core.train",
        ("--dataset", "nosuchflag", "--model", "cnn2d"),
        ("nosuchflag",),
    ),
    Row(
        "train-negative-epochs",
        "core.train",
        ("--dataset", "retinamnist", "--model", "cnn2d", "--epochs", "-1"),
        ("--epochs", "-1"),
    ),
    Row(
        "train-lr-not-a-number",
        "core.train",
        ("--dataset", "retinamnist", "--model", "cnn2d", "--lr", "abc"),
        ("--lr", "abc"),
        debug=False,
    ),
    Row(
        "train-dataset-offline",
        "core.train",
        ("--dataset", "breastmnist", "--model", "cnn2d", "--epochs", "1", "--output", "{reg}"),
        ("breastmnist.npz", "{base}/empty_data"),
        env={"MEDMNIST_ROOT": "{base}/empty_data"},
        tf=True,
    ),
    # -- core.data ---------------------------------------------------------------------------
    Row("data-unknown-dataset", "core.data", ("download", "nosuchflag"), ("nosuchflag",)),
    Row("data-unknown-size", "core.data", ("download", "breastmnist", "--size", "30"), ("30",)),
    Row(
        "data-size-not-a-number",
        "core.data",
        ("download", "breastmnist", "--size", "abc"),
        ("--size",),
        debug=False,
    ),
    Row(
        "data-download-offline",
        "core.data",
        ("download", "breastmnist"),
        ("breastmnist.npz", "{base}/empty_data"),
        env={"MEDMNIST_ROOT": "{base}/empty_data"},
    ),
    # -- core.auth ---------------------------------------------------------------------------
    Row("auth-short-password", "core.auth", ("hash",), ("at least",), stdin="short\n", debug=True),
    Row(
        "auth-too-few-iterations",
        "core.auth",
        ("hash", "--iterations", "5"),
        ("--iterations",),
        stdin=LONG_PASSWORD,
    ),
    Row("auth-no-command", "core.auth", (), ("required",), debug=False),
    # -- core.experiments --------------------------------------------------------------------
    Row(
        "experiments-zero-epochs",
        "core.experiments",
        ("run", "--arms", "cnn2d_aug", "--epochs", "0"),
        ("epochs",),
    ),
    Row(
        "experiments-negative-seed",
        "core.experiments",
        ("run", "--arms", "cnn2d_aug", "--seeds", "-1"),
        ("seed",),
    ),
    Row(
        "experiments-promote-damaged-staging",
        "core.experiments",
        ("promote", "--arms", "cnn2d_aug"),
        ("{base}/stage_registry/.staging/cnn2d_aug-s0/metrics.json",),
        env={"TRAINED_MODELS_DIR": "{base}/stage_registry"},
    ),
    # -- core.catalog: promoting a run -------------------------------------------------------
    Row(
        "catalog-promote-outside-registry",
        "core.catalog",
        ("promote", "{base}/not_a_run"),
        ("{base}/not_a_run", "outside the model registry"),
    ),
    Row(
        "catalog-promote-metrics-not-json",
        "core.catalog",
        ("promote", "metrics_not_json"),
        ("{reg}/metrics_not_json/metrics.json",),
    ),
    Row("catalog-promote-no-run", "core.catalog", ("promote",), ("run",), debug=False),
    # -- core.jobs (converted to core.cli.run by the job-queue change) ------------------------
    Row("jobs-list-not-sqlite", "core.jobs", ("list", "--db", "{base}/not_sqlite.db"), ("{db}",)),
    Row(
        "jobs-worker-not-sqlite",
        "core.jobs",
        ("worker", "--once", "--db", "{base}/not_sqlite.db"),
        ("{db}",),
    ),
    Row(
        "jobs-cancel-unknown-job",
        "core.jobs",
        ("cancel", "999", "--db", "{base}/fresh.db"),
        ("999",),
        debug=False,
    ),
    Row(
        "jobs-worker-ray-no-address",
        "core.jobs",
        ("worker", "--executor", "ray", "--once", "--db", "{base}/fresh.db"),
        ("RAY_ADDRESS",),
        env={"RAY_ADDRESS": ""},
    ),
    Row(
        "jobs-worker-local-max-running",
        "core.jobs",
        ("worker", "--max-running", "2", "--once", "--db", "{base}/fresh.db"),
        ("--max-running",),
        env={"RAY_ADDRESS": ""},
    ),
    # -- core.distributed: the multi-worker launcher -------------------------------------------
    Row("distributed-no-train-flags", "core.distributed", ("--workers", "2"), ("training flags",)),
    Row(
        "distributed-strategy-flag",
        "core.distributed",
        ("--workers", "2", "--", "--dataset", "breastmnist", "--strategy", "default"),
        ("--strategy",),
    ),
    # -- core.trust: fitting calibration/OOD on a run, building an ensemble --------------------
    Row("trust-missing-dir", "core.trust", ("{base}/nothing",), ("{base}/nothing",), tf=True),
    Row("trust-name-not-in-registry", "core.trust", ("no_such_run",), ("no_such_run",), tf=True),
    Row(
        "trust-only-metrics",
        "core.trust",
        ("{reg}/only_metrics",),
        ("{reg}/only_metrics", "model.keras"),
        tf=True,
    ),
    Row(
        "trust-ensemble-no-runs",
        "core.trust",
        ("ensemble", "--dataset", "nope", "--name", "x"),
        ("nope",),
        tf=True,
    ),
    Row(
        "trust-ensemble-bad-flag",
        "core.trust",
        ("ensemble", "--dataset", "retinamnist", "--name", "x", "--max-members", "many"),
        ("--max-members",),
        debug=False,
    ),
]


# one TensorFlow row is enough to show --debug reaches through the model loading
DEBUG_TF_ROWS = {"evaluate-random-bytes-model"}


def _params(rows: list[Row]) -> list:
    params = []
    for row in rows:
        marks = [pytest.mark.slow] if row.tf else []
        if row.xfail:
            marks.append(pytest.mark.xfail(reason=row.xfail, strict=True))
        params.append(pytest.param(row, id=row.id, marks=marks))
    return params


@pytest.fixture(scope="module")
def bad(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Damaged copies of a shipped run and the other bad inputs; the placeholders of ``Row``.

    The copies live in a tmp registry (``TRAINED_MODELS_DIR``), so rows can name a run or
    pass its path; nothing in the repo is touched.
    """
    base = tmp_path_factory.mktemp("cli_errors")
    reg = base / "registry"
    reg.mkdir()

    def copy(name: str) -> Path:
        return Path(shutil.copytree(SHIPPED, reg / name))

    model_bytes = (SHIPPED / "model.keras").read_bytes()
    rng = np.random.default_rng(0)
    (copy("random_model") / "model.keras").write_bytes(rng.bytes(len(model_bytes)))
    (copy("truncated_model") / "model.keras").write_bytes(model_bytes[: len(model_bytes) // 2])
    config_text = (SHIPPED / "config.json").read_text()
    (copy("config_not_json") / "config.json").write_text(config_text[: len(config_text) // 2])
    metrics_text = (SHIPPED / "metrics.json").read_text()
    (copy("metrics_not_json") / "metrics.json").write_text(metrics_text[: len(metrics_text) // 2])
    (copy("config_missing_fields") / "config.json").write_text(json.dumps({"model": "cnn2d"}))
    only = reg / "only_metrics"
    only.mkdir()
    shutil.copy(SHIPPED / "metrics.json", only / "metrics.json")

    (base / "not_a_run").mkdir()
    (base / "empty_data").mkdir()
    (base / "not_sqlite.db").write_bytes(b"these are not the bytes of an SQLite file\n" * 20)
    staged = base / "stage_registry" / ".staging" / "cnn2d_aug-s0"
    staged.mkdir(parents=True)
    (staged / "metrics.json").write_text('{"val": {"auc": 0.7')
    return {"base": str(base), "reg": str(reg), "db": str(base / "not_sqlite.db")}


def _run(row: Row, bad: dict[str, str], *extra: str) -> subprocess.CompletedProcess:
    if row.data:
        require_real_file("retinamnist")
    env = {
        **os.environ,
        "MEDMNIST_ROOT": str(real_root()),
        "TRAINED_MODELS_DIR": bad["reg"],
        "JOBS_DB": f"{bad['base']}/default-jobs.sqlite",
        "TF_CPP_MIN_LOG_LEVEL": "2",
        **OFFLINE,
    }
    env.update({k: v.format(**bad) for k, v in row.env.items()})
    args = [a.format(**bad) for a in row.args]
    return subprocess.run(
        [sys.executable, "-m", row.module, *args, *extra],
        cwd=REPO,
        env=env,
        input=row.stdin,
        capture_output=True,
        text=True,
        timeout=180 if row.tf else 60,
    )


def _last_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    return lines[-1] if lines else ""


@pytest.mark.parametrize("row", _params(ROWS))
def test_user_error_is_one_line(row: Row, bad: dict[str, str]):
    out = _run(row, bad)
    last = _last_line(out.stderr)
    report = f"exit {out.returncode}\nstdout: {out.stdout[-1500:]}\nstderr: {out.stderr[-3000:]}"
    assert out.returncode == 2, report
    assert last.startswith("error: "), report
    assert "Traceback" not in out.stderr, report
    assert " at 0x" not in last, report  # no object reprs
    for name in row.names:
        assert name.format(**bad) in last, f"{name.format(**bad)!r} not named\n{report}"


@pytest.mark.parametrize(
    "row", _params([r for r in ROWS if r.debug and (not r.tf or r.id in DEBUG_TF_ROWS)])
)
def test_debug_shows_the_traceback(row: Row, bad: dict[str, str]):
    out = _run(row, bad, cli.DEBUG_FLAG)
    assert out.returncode == 2, out.stderr[-3000:]
    assert "Traceback (most recent call last)" in out.stderr, out.stderr[-3000:]
    assert _last_line(out.stderr).startswith("error: "), out.stderr[-3000:]


def test_the_table_covers_every_core_command():
    """A new ``python -m core.<x>`` command gets rows here, or this fails."""
    mains = {
        f"core.{p.stem}"
        for p in (REPO / "core").glob("*.py")
        if re.search(r'^if __name__ == "__main__":', p.read_text(), re.MULTILINE)
    } | {f"core.{p.parent.name}" for p in (REPO / "core").glob("*/__main__.py")}  # packages
    assert mains == {row.module for row in ROWS}
    assert {row.id for row in ROWS} >= DEBUG_TF_ROWS


def test_shipped_runs_pass_the_checks():
    """The checks that refuse damaged runs accept every shipped run (no false alarms)."""
    ensembles = set(registry.ensemble_dirs(REPO / "trained_models"))
    for run in sorted((REPO / "trained_models").iterdir()):
        if run in ensembles:  # no model of its own: its members must all be shipped runs
            members, _ = registry.ensemble_members(run)
            assert members and all(m.parent == run.parent for m in members)
        elif run.is_dir() and not run.name.startswith("."):
            path = registry.resolve_run(run.name, root=REPO / "trained_models")
            registry.read_json(path, "metrics.json")
            assert registry.read_config(path).dataset
    assert ensembles, "the shipped ensembles were not found"


# --- core.cli in-process -------------------------------------------------------------------


def _boom(exc: BaseException):
    def main(argv):
        raise exc

    return main


def test_run_prints_one_line_and_exit_2(capsys):
    err = ValueError("bad value in /x/config.json.\n  1. Fix it.\n  2. Or delete it.")
    assert cli.run(_boom(err), []) == 2
    stderr = capsys.readouterr().err
    assert stderr == "error: bad value in /x/config.json. 1. Fix it. 2. Or delete it.\n"


def test_run_with_debug_prints_the_traceback_then_the_line(capsys):
    assert cli.run(_boom(OSError("disk gone")), ["--debug"]) == 2
    stderr = capsys.readouterr().err
    assert "Traceback (most recent call last)" in stderr
    assert _last_line(stderr) == "error: disk gone"


def test_run_names_an_unexpected_exception_as_a_probable_bug(capsys):
    assert cli.run(_boom(KeyError("val")), []) == 2
    line = capsys.readouterr().err.strip()
    assert line.startswith("error: unexpected KeyError: 'val'") and "--debug" in line


def test_run_strips_memory_addresses(capsys):
    assert cli.run(_boom(ValueError(f"cannot read {object()}")), []) == 2
    assert " at 0x" not in capsys.readouterr().err


def test_run_passes_the_exit_status_and_argv_through():
    seen = []
    assert cli.run(lambda argv: seen.append(argv) or 3, ["a", "--debug", "b"]) == 3
    assert seen == [["a", "b"]]
    assert cli.run(lambda argv: None, []) == 0


def test_argument_parser_error_is_one_line(capsys):
    parser = cli.ArgumentParser(prog="python -m core.x")
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("go").add_argument("--n", type=cli.positive_int)
    with pytest.raises(SystemExit) as exc:
        parser.parse_args(["go", "--n", "0"])
    assert exc.value.code == 2
    stderr = capsys.readouterr().err
    assert stderr.count("\n") == 1 and stderr.startswith("error: argument --n: '0' is not")
    assert "python -m core.x go --help" in stderr


# --- core.registry: the file at fault is named where it is read -----------------------------


def test_read_json_names_a_damaged_file(tmp_path):
    (tmp_path / "metrics.json").write_text('{"val": ')
    with pytest.raises(registry.RunFileError, match="metrics.json is not valid JSON") as exc:
        registry.read_json(tmp_path, "metrics.json")
    assert str(tmp_path / "metrics.json") in str(exc.value)
    assert isinstance(exc.value, ValueError)  # callers that skipped JSONDecodeError still do
    (tmp_path / "history.json").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(registry.RunFileError, match="history.json is not UTF-8"):
        registry.read_json(tmp_path, "history.json")


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (None, "has no config.json"),
        ("[1, 2]", "config.json holds a JSON list"),
        ('{"model": "cnn2d"}', r"config.json is not a valid run configuration.*dataset"),
        ('{"dataset": "nosuch", "model": "cnn2d"}', r"config.json .*unknown MedMNIST"),
        ('{"dataset": "retinamnist", "model": "cnn2d", "epochs": "3"}', "config.json .*epochs"),
    ],
)
def test_read_config_names_config_json(tmp_path, content, match):
    if content is not None:
        (tmp_path / "config.json").write_text(content)
    with pytest.raises(registry.RegistryError, match=match):
        registry.read_config(tmp_path)


def test_list_runs_still_skips_a_damaged_run(tmp_path):
    good = Path(shutil.copytree(SHIPPED, tmp_path / "good"))
    bad_run = Path(shutil.copytree(SHIPPED, tmp_path / "bad"))
    (bad_run / "config.json").write_text("{")
    (good / "explain.json").write_text("{")  # optional file: read as absent
    runs = registry.list_runs(tmp_path)
    assert [r["name"] for r in runs] == ["good"] and runs[0]["explain"] is None


@pytest.mark.parametrize("damage", ["random", "truncated"])
def test_load_model_names_a_damaged_model_file(tmp_path, damage):
    run = Path(shutil.copytree(SHIPPED, tmp_path / "r"))
    data = (SHIPPED / "model.keras").read_bytes()
    damaged = np.random.default_rng(1).bytes(len(data)) if damage == "random" else data[:4096]
    (run / "model.keras").write_bytes(damaged)
    with pytest.raises(registry.RunFileError, match="cannot be loaded as a Keras model") as exc:
        registry.load_model(run, allow_outside=True)
    assert str(run / "model.keras") in str(exc.value)


def test_load_model_names_a_damaged_lean_weights_file(tmp_path, vgg16_weights_file):
    run = Path(shutil.copytree(SHIPPED, tmp_path / "lean"))
    (run / "model.keras").unlink()
    cfg = json.loads((run / "config.json").read_text())
    cfg.update(model="vgg16", lean=True, augment=False)
    (run / "config.json").write_text(json.dumps({**cfg, "dataset": "retinamnist"}))
    (run / registry.LEAN_FILE).write_bytes(b"PK\x03\x04 not a whole zip")
    with pytest.raises(registry.RunFileError, match=registry.LEAN_FILE) as exc:
        registry.load_model(run, allow_outside=True)
    assert str(run / registry.LEAN_FILE) in str(exc.value)
