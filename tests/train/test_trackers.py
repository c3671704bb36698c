"""`log_with: [wandb, mlflow]`: the loop's log records reach accelerate's trackers, offline (wandb's offline mode,
an MLflow file store in a temporary folder), with the same steps and values as metrics.jsonl."""

from __future__ import annotations

import json

import pytest
import torch

from flanmix.core.errors import FlanmixError
from trainers.config import LoopSettings
from trainers.loop import train
from trainers.protocol import Stage


class Regression(Stage):
    """A linear model on fixed random rows."""

    name = "toy"

    def __init__(self):
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(32, 4, generator=g)
        self.y = self.x.sum(1, keepdim=True)
        torch.manual_seed(1)
        self.model = torch.nn.Linear(4, 1)

    def train_dataset(self):
        return list(range(len(self.x)))

    def collate(self, idx):
        return {"x": self.x[idx], "y": self.y[idx]}

    def loss(self, model, batch):
        return ((model(batch["x"]) - batch["y"]) ** 2).mean(), {}

    def save(self, ctx, out_dir):
        pass


def _settings(tmp_path, log_with):
    return LoopSettings(output_dir=str(tmp_path / "run"), batch_size=4, max_steps=4, log_every=2, progress=False,
                        tensorboard=False, mixed_precision="no", log_with=log_with, project="trackers-test")


def _jsonl(tmp_path):
    return [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture
def wandb_offline(tmp_path, monkeypatch):
    """wandb in offline mode, every file of it under the test's folder."""
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb-config"))
    monkeypatch.setenv("WANDB_CACHE_DIR", str(tmp_path / "wandb-cache"))


def test_mlflow_file_store_gets_the_log_records(tmp_path, monkeypatch):
    mlflow = pytest.importorskip("mlflow")
    uri = (tmp_path / "mlruns").as_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # mlflow 3 keeps the file store behind this switch
    train(Regression(), _settings(tmp_path, ["mlflow"]))
    client = mlflow.tracking.MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("trackers-test")
    (run,) = client.search_runs([experiment.experiment_id])
    history = client.get_metric_history(run.info.run_id, "toy/loss")
    expected = _jsonl(tmp_path)
    assert [m.step for m in history] == [r["step"] for r in expected] == [2, 4]
    assert [m.value for m in history] == pytest.approx([r["loss"] for r in expected])
    assert run.info.status == "FINISHED"
    assert run.data.params["max_steps"] == "4"


def test_wandb_offline_run_gets_the_log_records(tmp_path, monkeypatch, wandb_offline):
    from wandb.sdk.wandb_run import Run

    logged = []
    real_log = Run.log

    def spy(run, data, step=None, **kwargs):  # what reaches wandb's run (its binary .wandb file has no reader)
        logged.append((step, data["toy/loss"]))
        return real_log(run, data, step=step, **kwargs)

    monkeypatch.setattr(Run, "log", spy)
    train(Regression(), _settings(tmp_path, ["wandb"]))
    (run_dir,) = (tmp_path / "run" / "wandb").glob("offline-run-*")
    (events,) = run_dir.glob("run-*.wandb")
    assert events.stat().st_size > 0
    expected = _jsonl(tmp_path)
    assert [step for step, _ in logged] == [r["step"] for r in expected] == [2, 4]
    assert [loss for _, loss in logged] == pytest.approx([r["loss"] for r in expected])


def test_a_missing_tracker_package_is_one_error(tmp_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    with pytest.raises(FlanmixError, match="log_with: wandb is not installed"):
        train(Regression(), _settings(tmp_path, ["wandb"]))


def _crash_after_step_2(tmp_path):
    """Leave the run folder as a crash after step 2's checkpoint would: the last checkpoint gone."""
    import shutil

    checkpoints = tmp_path / "run" / "checkpoints"
    shutil.rmtree(checkpoints / "step-4")
    shutil.rmtree(tmp_path / "run" / "final", ignore_errors=True)


def test_a_resumed_run_continues_its_mlflow_run(tmp_path, monkeypatch):
    mlflow = pytest.importorskip("mlflow")
    uri = (tmp_path / "mlruns").as_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    settings = _settings(tmp_path, ["mlflow"]).model_copy(update={"save_every": 2, "keep_checkpoints": 5})
    train(Regression(), settings)
    _crash_after_step_2(tmp_path)
    train(Regression(), settings)  # resumes from step 2
    client = mlflow.tracking.MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("trackers-test")
    (run,) = client.search_runs([experiment.experiment_id])  # one run, continued - not a second one
    assert json.loads((tmp_path / "run" / "tracker_runs.json").read_text()) == {"mlflow": run.info.run_id}
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "toy/loss")]
    assert steps == [2, 4, 4]  # the crashed run's step 4, then the resumed run's (MLflow cannot purge it)
    assert run.info.status == "FINISHED" and run.data.params["max_steps"] == "4"


def test_a_resumed_run_asks_wandb_to_continue_its_run(tmp_path, monkeypatch, wandb_offline):
    import wandb

    calls = []
    real_init = wandb.init

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return real_init(*args, **kwargs)

    monkeypatch.setattr(wandb, "init", spy)
    settings = _settings(tmp_path, ["wandb"]).model_copy(update={"save_every": 2, "keep_checkpoints": 5})
    train(Regression(), settings)
    first_id = json.loads((tmp_path / "run" / "tracker_runs.json").read_text())["wandb"]
    _crash_after_step_2(tmp_path)
    train(Regression(), settings)
    assert "id" not in calls[0] and (calls[1]["id"], calls[1]["resume"]) == (first_id, "allow")
