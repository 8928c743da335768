"""Multi-worker training for real: two local processes, one model, MultiWorkerMirroredStrategy.

``python -m core.distributed --workers 2`` starts two ``python -m core.train … --strategy
multiworker`` processes with ``TF_CONFIG`` on loopback ports; they all-reduce every step over
gRPC. The chief (worker 0) saves the one run; the other trains into a scratch folder it
deletes. The run must load and evaluate like any other.
"""

from __future__ import annotations

import io
import json
import math
import os

import numpy as np
import pytest
from conftest import require_real_file

from core import cli, data, distributed, evaluation, info, registry

pytestmark = pytest.mark.slow


def test_tf_config_names_every_worker_and_this_index():
    addresses = [f"127.0.0.1:{p}" for p in distributed.free_ports(3)]
    assert len(set(addresses)) == 3
    config = json.loads(distributed.tf_config(addresses, 2))
    assert config == {"cluster": {"worker": addresses}, "task": {"type": "worker", "index": 2}}


def test_launcher_refuses_a_strategy_flag_and_missing_train_flags():
    with pytest.raises(cli.CLIError, match="drop --strategy"):
        distributed.main(["--workers", "2", "--", "--dataset", "x", "--strategy", "default"])
    with pytest.raises(cli.CLIError, match="no training flags"):
        distributed.main(["--workers", "2"])


def test_two_workers_train_one_run_that_loads_and_evaluates(tmp_path, monkeypatch):
    require_real_file("breastmnist")
    registry_dir = tmp_path / "trained_models"
    monkeypatch.setenv("TRAINED_MODELS_DIR", str(registry_dir))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    out = io.StringIO()
    status, chief_lines = distributed.launch(
        2,
        ["--dataset", "breastmnist", "--model", "cnn2d", "--epochs", "1", "--batch-size", "32"],
        out=out,
    )
    text = out.getvalue()
    assert status == 0, text[-4000:]
    # both processes trained; only the chief saved, and it printed the run dir last
    assert "[worker 1] non-chief worker finished; the chief saved the run" in text
    runs = [p for p in registry_dir.iterdir()]
    assert len(runs) == 1 and not runs[0].name.startswith("."), runs
    run_dir = runs[0]
    assert chief_lines[-1] == str(run_dir)

    cfg = registry.read_json(run_dir, "config.json")
    assert cfg["strategy"] == "MultiWorkerMirroredStrategy"
    history = registry.read_json(run_dir, "history.json")
    assert len(history["loss"]) == 1 and math.isfinite(history["loss"][0])

    model = registry.load_model(run_dir)
    x, y = data.load_split("breastmnist", "test", 28, root=os.environ.get("MEDMNIST_ROOT"))
    from core.models import prepare_input

    scores = evaluation.predict(model, prepare_input("cnn2d", x))
    assert scores.shape == (len(y), info.num_classes("breastmnist"))
    assert np.all(np.isfinite(scores))
    result = evaluation.evaluate(y, scores, info.task("breastmnist"))
    saved = registry.read_json(run_dir, "metrics.json")["test"]
    assert result["auc"] == pytest.approx(saved["auc"], abs=1e-6)
    assert 0.0 <= result["auc"] <= 1.0
