"""The shared training loop: schedule, accumulation, exact resume, NaN stop, stage-made batches, and process-wide
settings restored after a run."""

from __future__ import annotations

import json
import os
import shutil

import pytest
import torch
from safetensors.torch import load_file

from flanmix.core.errors import FlanmixError
from trainers.batching import IndexStream
from trainers.checkpoint import checkpoints
from trainers.config import LoopSettings
from trainers.loop import train
from trainers.optim import lr_lambda
from trainers.protocol import Stage


class ToyStage(Stage):
    """Linear regression on fixed random data; loss is a mean over rows, count = rows."""

    name = "toy"

    def __init__(self, n=64, nan_at_step=None, dropout=0.0):
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(n, 8, generator=g)
        self.y = self.x @ torch.randn(8, 1, generator=g) + 0.1 * torch.randn(n, 1, generator=g)
        torch.manual_seed(1)
        self.model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Dropout(dropout), torch.nn.Linear(16, 1))
        self.nan_at_step = nan_at_step
        self.calls = 0

    def train_dataset(self):
        return list(range(len(self.x)))

    def collate(self, idx):
        return {"x": self.x[idx], "y": self.y[idx]}

    def loss(self, model, batch):
        self.calls += 1
        loss = ((model(batch["x"]) - batch["y"]) ** 2).mean()
        if self.nan_at_step is not None and self.ctx_step() >= self.nan_at_step:
            loss = loss * float("nan")
        return loss, {"mse": loss.detach()}

    def setup(self, ctx):
        self.ctx = ctx

    def ctx_step(self):
        return self.ctx.step

    def save(self, ctx, out_dir):
        if ctx.is_main:
            torch.save(ctx.accelerator.unwrap_model(ctx.model).state_dict(), out_dir / "toy.pt")


def _cfg(tmp_path, name, **kw):
    base = dict(output_dir=str(tmp_path / name), batch_size=4, grad_accum=2, max_steps=8, lr=0.05, log_every=1,
                progress=False, tensorboard=False, warmup_steps=2, seed=3, mixed_precision="no")
    base.update(kw)
    return LoopSettings(**base)


def _losses(result):
    return [h["loss"] for h in result.history if "loss" in h]


def test_lr_schedules():
    f = lr_lambda("cosine", warmup=2, total=10, min_ratio=0.1)
    assert f(0) == 0.5 and f(1) == 1.0 and f(2) == 1.0 and abs(f(10) - 0.1) < 1e-9
    g = lr_lambda("linear", warmup=0, total=10, min_ratio=0.0)
    assert g(5) == 0.5
    assert lr_lambda("constant", 0, 10, 0.0)(7) == 1.0
    with pytest.raises(FlanmixError, match="unknown schedule 'step'"):
        lr_lambda("step", 0, 10, 0.0)


def test_loss_decreases_and_outputs_written(tmp_path):
    res = train(ToyStage(), _cfg(tmp_path, "a", tensorboard=True, max_steps=12))
    losses = _losses(res)
    assert len(losses) == 12 and losses[-1] < losses[0]
    out = tmp_path / "a"
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert lines[0]["step"] == 1 and {"loss", "lr", "tokens_per_s", "mse", "grad_norm"} <= set(lines[0])
    assert list((out / "tb").iterdir())
    assert (out / "final" / "toy.pt").exists()
    assert [p.name for p in checkpoints(out)] == ["step-12"]


def test_grad_accumulation_matches_bigger_batch(tmp_path):
    a = _losses(train(ToyStage(), _cfg(tmp_path, "a", batch_size=8, grad_accum=1)))
    b = _losses(train(ToyStage(), _cfg(tmp_path, "b", batch_size=2, grad_accum=4)))
    assert a == pytest.approx(b, abs=1e-5)


def test_resume_reproduces_uninterrupted_run(tmp_path):
    full = train(ToyStage(dropout=0.2), _cfg(tmp_path, "full", save_every=3, keep_checkpoints=5))
    ref = _losses(full)
    assert [p.name for p in checkpoints(tmp_path / "full")] == ["step-3", "step-6", "step-8"]
    # a "crashed" run: only the step-3 checkpoint exists; resume="auto" picks it up
    crashed = tmp_path / "crashed"
    shutil.copytree(tmp_path / "full" / "checkpoints" / "step-3", crashed / "checkpoints" / "step-3")
    resumed = train(ToyStage(dropout=0.2), _cfg(tmp_path, "crashed", save_every=3))
    assert _losses(resumed) == ref[3:]  # exact, dropout RNG and data order included
    a = torch.load(tmp_path / "full" / "final" / "toy.pt")
    b = torch.load(crashed / "final" / "toy.pt")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_rerunning_a_finished_run_logs_nothing_twice(tmp_path):
    """A second run of a finished run (resume=auto finds its final checkpoint) trains nothing and logs nothing new:
    the final eval record is not written a second time, and the final model is the same."""
    class EvalStage(ToyStage):
        def evaluate(self, ctx):
            return {"eval_toy": 1.0}

    train(EvalStage(), _cfg(tmp_path, "run", save_every=3))
    first = (tmp_path / "run" / "metrics.jsonl").read_text()
    assert first.count("eval_toy") == 1
    again = train(EvalStage(), _cfg(tmp_path, "run", save_every=3))
    assert (tmp_path / "run" / "metrics.jsonl").read_text() == first
    assert again.steps == 8 and [p.name for p in checkpoints(tmp_path / "run")][-1] == "step-8"


def test_resume_after_a_crash_logs_each_step_once(tmp_path):
    """A crash after step 5 (checkpoint at 3, a torn line being written) left metrics.jsonl and TensorBoard events
    for steps 1-5; the resumed run cuts them back to step 3, so the logged steps are strictly increasing and the
    curve equals the uninterrupted run's."""
    full = tmp_path / "full"
    train(ToyStage(dropout=0.2), _cfg(tmp_path, "full", save_every=3, keep_checkpoints=5, tensorboard=True))
    ref = [json.loads(x) for x in (full / "metrics.jsonl").read_text().splitlines()]
    crashed = tmp_path / "crashed"
    shutil.copytree(full / "checkpoints" / "step-3", crashed / "checkpoints" / "step-3")
    # what the crashed run had logged: steps 1-5 and half of step 6's line
    head = (full / "metrics.jsonl").read_text().splitlines(keepends=True)[:6]
    (crashed / "metrics.jsonl").write_text("".join(head[:5]) + head[5][:20])
    first = train(ToyStage(dropout=0.2), _cfg(tmp_path, "crashed_tb", max_steps=8, save_every=100, tensorboard=True))
    shutil.copytree(tmp_path / "crashed_tb" / "tb", crashed / "tb")  # event files with steps 1-8 already logged
    train(ToyStage(dropout=0.2), _cfg(tmp_path, "crashed", save_every=3, tensorboard=True))
    lines = [json.loads(x) for x in (crashed / "metrics.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in lines]
    assert steps == sorted(set(steps)) == list(range(1, 9))
    assert [r["loss"] for r in lines] == [r["loss"] for r in ref]
    assert len(first.history) == 8
    ea = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    acc = ea.EventAccumulator(str(crashed / "tb"))
    acc.Reload()
    events = acc.Scalars("toy/loss")
    assert [e.step for e in events] == list(range(1, 9))  # purge_step hid the first file's steps 4-8
    assert [e.value for e in events][3:] == pytest.approx([r["loss"] for r in ref][3:])


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    with pytest.raises(FlanmixError, match=r"NaN/inf at step 5.*last good checkpoint: .*step-4"):
        train(ToyStage(nan_at_step=4), _cfg(tmp_path, "nan", save_every=2, log_every=3, keep_checkpoints=5))
    out = tmp_path / "nan"
    assert [p.name for p in checkpoints(out)] == ["step-2", "step-4"]
    assert not list((out / "checkpoints").glob("*.tmp"))
    weights = load_file(str(out / "checkpoints" / "step-4" / "model.safetensors"))
    assert all(torch.isfinite(v).all() for v in weights.values())


class StreamStage(Stage):
    """PPO-shaped: makes its own micro-batches from internal state that is checkpointed."""

    name = "stream"

    def __init__(self):
        torch.manual_seed(0)
        self.model = torch.nn.Linear(4, 1)
        self.made = 0

    def batches(self, ctx):
        while True:
            g = torch.Generator().manual_seed(self.made)
            self.made += 1
            x = torch.randn(6, 4, generator=g)
            with torch.no_grad():  # a "rollout" with the current policy
                y = ctx.unwrapped(x.to(ctx.device)).cpu() + 1.0
            yield {"x": x, "y": y}

    def loss(self, model, batch):
        return ((model(batch["x"]) - batch["y"]) ** 2).mean(), {}

    def state_dict(self):
        return {"made": self.made}

    def load_state_dict(self, state):
        self.made = state["made"]

    def save(self, ctx, out_dir):
        pass


def test_stage_made_batches_resume(tmp_path):
    ref = _losses(train(StreamStage(), _cfg(tmp_path, "s", save_every=2, keep_checkpoints=5, max_steps=6,
                                            grad_accum=1)))
    crashed = tmp_path / "s2"
    shutil.copytree(tmp_path / "s" / "checkpoints" / "step-4", crashed / "checkpoints" / "step-4")
    again = _losses(train(StreamStage(), _cfg(tmp_path, "s2", save_every=2, max_steps=6, grad_accum=1)))
    assert again == ref[4:]


@pytest.mark.parametrize("failure", ["torch", "oserror"])
def test_full_disk_during_a_checkpoint_is_one_error(tmp_path, monkeypatch, failure):
    """torch's zip writer reports a full disk as a RuntimeError ("unexpected pos"); safetensors/json as ENOSPC:
    either way one FlanmixError, the half-written step-N.tmp removed, the last complete checkpoint kept."""
    real_save = torch.save

    def full_disk(obj, f, *args, **kwargs):
        if "step-4" in str(f):
            if failure == "torch":
                raise RuntimeError("[enforce fail at inline_container.cc:603] . unexpected pos 512 vs 448")
            raise OSError(28, "No space left on device")
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(FlanmixError, match=r"checkpoint step-4 could not be written: .*(unexpected pos|No space)"):
        train(ToyStage(), _cfg(tmp_path, "full", save_every=2, keep_checkpoints=5))
    assert sorted(p.name for p in (tmp_path / "full" / "checkpoints").iterdir()) == ["step-2"]


def test_length_grouped_stream_is_a_seeded_permutation_with_similar_lengths():
    rng = torch.Generator().manual_seed(0)
    lengths = torch.randint(1, 200, (1000,), generator=rng).tolist()
    s = IndexStream(1000, seed=5, lengths=lengths, group=8)
    first = s.take(0, 1000)
    assert sorted(first) == list(range(1000))
    assert IndexStream(1000, seed=5, lengths=lengths, group=8).take(0, 1000) == first
    assert s.take(1000, 1000) != first  # a new epoch, a new order
    spread = [max(lengths[i] for i in first[k:k + 8]) - min(lengths[i] for i in first[k:k + 8])
              for k in range(0, 1000, 8)]
    plain = IndexStream(1000, seed=5).take(0, 1000)
    spread_plain = [max(lengths[i] for i in plain[k:k + 8]) - min(lengths[i] for i in plain[k:k + 8])
                    for k in range(0, 1000, 8)]
    assert sum(spread) * 5 < sum(spread_plain)


class SettingsStage(ToyStage):
    """Records the torch threads it trains with and touches the environment, as accelerate and DeepSpeed do."""

    def setup(self, ctx):
        super().setup(ctx)
        self.threads_in_run = torch.get_num_threads()
        os.environ["FLANMIX_TEST_EXISTING"] = "changed by the run"
        os.environ["FLANMIX_TEST_NEW"] = "set by the run"


def test_process_settings_apply_during_the_run_and_are_restored(tmp_path, monkeypatch):
    before = torch.get_num_threads()
    other = 2 if before == 1 else 1
    monkeypatch.setenv("FLANMIX_TEST_EXISTING", "before")
    monkeypatch.delenv("FLANMIX_TEST_NEW", raising=False)
    stage = SettingsStage()
    try:
        train(stage, _cfg(tmp_path, "threads", max_steps=2, threads=other))
        assert stage.threads_in_run == other
        assert torch.get_num_threads() == before
        assert os.environ["FLANMIX_TEST_EXISTING"] == "before" and "FLANMIX_TEST_NEW" not in os.environ
        # also when the run fails
        with pytest.raises(FlanmixError, match="NaN/inf"):
            train(SettingsStage(nan_at_step=0), _cfg(tmp_path, "threads_nan", max_steps=2, threads=other))
        assert torch.get_num_threads() == before and "FLANMIX_TEST_NEW" not in os.environ
    finally:
        torch.set_num_threads(before)


def test_a_stage_needs_rows_or_its_own_batches(tmp_path):
    class NoData(Stage):
        name = "nodata"

        def __init__(self):
            self.model = torch.nn.Linear(2, 1)

        def loss(self, model, batch):
            return model(batch["x"]).mean(), {}

    with pytest.raises(NotImplementedError, match="train_dataset"):
        train(NoData(), _cfg(tmp_path, "nodata"))
