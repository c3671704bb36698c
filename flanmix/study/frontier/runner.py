"""Running a frontier study: the shared start (model, data, SFT, preference rankings, the SFT point), then every
run of every sweep, each evaluated at its checkpoints; resumable at every step.

Layout of `--out`:
    base.json                  fingerprint of what every run shares (a changed task/model/SFT/preferences is an
                               error: use a new folder)
    models/init/               the initial model (when the spec names a ladder size)
    data/                      sft.jsonl, prompts.jsonl, eval_prompts.jsonl, preferences.jsonl
    sft/                       the SFT run (COMPLETE when done) and runs/sft/result.json (the SFT point)
    runs/<id>/                 one run: run.json (its settings hash), train/ (the stage's output), result.json
    results.csv / .jsonl / .md, frontier.png, winrate.png, timings.json

A run is complete when `runs/<id>/result.json` exists (written atomically) with the run's current hash; a rerun
skips it. A run whose settings changed is trained again from scratch.

With `engine="ray"` the shared start runs on the driver and every remaining run is a Ray task (`threads` CPUs
each) that rebuilds the study from the spec file and writes its own `result.json`; the study folder must be on
storage every node sees. The tables are the same as a local run's.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flanmix.core.atomic import write_json, write_jsonl
from flanmix.core.errors import FlanmixError
from flanmix.core.jsonl import read_jsonl
from flanmix.mixture.ray_cluster import check_engine, ray_session
from flanmix.study.frontier.data import rankings, task_data
from flanmix.study.frontier.measure import Evaluator, decode, load_checkpoint_policy
from flanmix.study.frontier.report import write_reports
from flanmix.study.frontier.sampling import sample
from flanmix.study.frontier.spec import FrontierSpec, RunSweep, load_spec
from trainers.checkpoint import checkpoints
from trainers.init_model import init_model
from trainers.models import load_tokenizer
from trainers.policy import load_policy
from trainers.rewards import load_reward_fn
from trainers.runtime import torch_threads
from trainers.stages import run_stage

Log = Callable[[str], None]
PREF_SEED = 5_000  # seed offset of the SFT samples that become preference data


def stderr_log(message: str) -> None:
    """The default progress log: one `[frontier]` line on stderr."""
    print(f"[frontier] {message}", file=sys.stderr, flush=True)


def _hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]




@dataclass
class Study:
    """One study folder and its spec."""

    spec: FrontierSpec
    out: Path
    base_dir: Path | None
    log: Log

    @property
    def data(self) -> Path:
        return self.out / "data"

    @property
    def sft_dir(self) -> Path:
        return self.out / "sft" / "final"

    def run_id(self, sweep: RunSweep, value: float) -> str:
        return f"{sweep.method}-{sweep.knob}-{value:g}"

    def run_dir(self, run_id: str) -> Path:
        return self.out / "runs" / run_id


def run(spec_path: str | Path, out: str | Path, *, only: str | None = None, threads: int | None = None,
        log: Log = stderr_log, engine: str = "local", address: str | None = None) -> dict:
    """Run (or resume) the frontier study of `spec_path` into `out`; returns {"rows", "ran", "skipped"}.

    `only` is a glob over run ids (`ppo-*`, `dpo-beta-0.1`); `threads` overrides the spec's torch threads;
    `engine="ray"` runs the runs as Ray tasks (on the cluster at `address`, default: a local one)."""
    check_engine(engine, address)
    spec, _ = load_spec(spec_path)
    study = Study(spec, Path(out), Path(spec_path).resolve().parent, log)
    todo = [(sw, v) for sw in spec.runs for v in sw.values
            if only is None or fnmatch.fnmatchcase(study.run_id(sw, v), only)]
    if not todo:
        raise FlanmixError(f"no run matches {only!r}", field="only", expected="a glob over run ids such as ppo-*")
    study.out.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    t_all = time.perf_counter()
    with torch_threads(threads or spec.threads):
        threads = threads or spec.threads
        _check_base(study)
        t0 = time.perf_counter()
        _prepare(study, threads)
        timings["prepare_sft_preferences"] = round(time.perf_counter() - t0, 2)
        evaluator = _evaluator(study)
        _baseline(study, evaluator)
        skipped = [study.run_id(sw, v) for sw, v in todo if _is_complete(study, sw, v)]
        left = [(sw, v) for sw, v in todo if study.run_id(sw, v) not in skipped]
        if engine == "ray" and left:
            ran = _run_on_ray(study, Path(spec_path), [study.run_id(sw, v) for sw, v in left], threads, address)
        else:
            for sweep, value in left:
                _run_one(study, evaluator, sweep, value, threads)
            ran = [study.run_id(sw, v) for sw, v in left]
    if skipped:
        log(f"skipped {len(skipped)} complete run(s)")
    rows = write_reports(study.spec, study.out)
    timings["total"] = round(time.perf_counter() - t_all, 2)
    write_json(study.out / "timings.json", {**timings, **_run_seconds(study)})
    log(f"results in {study.out}/results.md ({len(rows)} runs, {timings['total']:.0f}s)")
    return {"rows": rows, "ran": ran, "skipped": skipped}


# ----------------------------------------------------------------------------------------- the shared start

def _base_fingerprint(spec: FrontierSpec) -> dict:
    return {"seed": spec.seed, "task": spec.task.model_dump(), "model": spec.model.model_dump(), "sft": spec.sft,
            "preferences": spec.preferences.model_dump()}


def _check_base(study: Study) -> None:
    path = study.out / "base.json"
    fp = _hash(_base_fingerprint(study.spec))
    if path.is_file():
        if json.loads(path.read_text())["fingerprint"] != fp:
            raise FlanmixError("this folder was made with another task, model, SFT or preference setting",
                               file=path, expected="the same spec, or a new --out folder")
    else:
        write_json(path, {"fingerprint": fp, **_base_fingerprint(study.spec)})


def _prepare(study: Study, threads: int | None) -> None:
    """Initial model, data files, SFT and the preference rankings, each skipped when already there."""
    spec, data = study.spec, study.data
    if not (data / "eval_prompts.jsonl").is_file():  # written last of the three
        rows = task_data(spec, study.base_dir)
        write_jsonl(data / "sft.jsonl", rows.sft)
        write_jsonl(data / "prompts.jsonl", rows.train_prompts)
        write_jsonl(data / "eval_prompts.jsonl", rows.eval_prompts)
    init = _initial_model(study, [r["prompt"] + r["completion"] for r in read_jsonl(data / "sft.jsonl")])
    if not (study.out / "sft" / "COMPLETE").is_file():
        study.log(f"SFT from {init}")
        t0 = time.perf_counter()
        run_stage("sft", {"tensorboard": False, **spec.sft, "model": str(init), "data": str(data / "sft.jsonl"),
                          "output_dir": str(study.out / "sft"), "seed": spec.seed, "threads": threads,
                          "progress": False})
        write_json(study.out / "sft" / "COMPLETE", {"seconds": round(time.perf_counter() - t0, 2)})
        shutil.rmtree(study.out / "sft" / "checkpoints", ignore_errors=True)
    if not (data / "preferences.jsonl").is_file():
        _preferences(study)


def _initial_model(study: Study, texts: list[str]) -> Path:
    m = study.spec.model
    if m.path is not None:
        path = Path(m.path)
        path = path if path.is_absolute() or study.base_dir is None else study.base_dir / path
        if not (path / "config.json").is_file():
            raise FlanmixError("model folder not found (no config.json)", file=path, field="model.path")
        return path
    path = study.out / "models" / "init"
    if not (path / "config.json").is_file():
        info = init_model(m.size, path, vocab_size=m.vocab_size, texts=texts, seed=study.spec.seed, overwrite=True)
        study.log(f"init {m.size}: {info['params']:,} params, vocab {info['vocab_size']} -> {path}")
    return path


def _preferences(study: Study) -> None:
    """Rankings of k SFT samples per training prompt by the true reward (the DPO paper's controlled setup)."""
    spec, data = study.spec, study.data
    prompts = read_jsonl(data / "prompts.jsonl")
    tokenizer, model = load_tokenizer(study.sft_dir), load_policy(study.sft_dir)
    ev = Evaluator(tokenizer, model, prompts, load_reward_fn(spec.task.reward), spec.eval, spec.seed)
    k = spec.preferences.samples
    responses = sample(model, ev.prompt_ids, n=k, max_new_tokens=spec.eval.max_new_tokens,
                       temperature=spec.preferences.temperature, eos_id=tokenizer.eos_token_id,
                       pad_id=tokenizer.pad_token_id, seed=spec.seed + PREF_SEED, batch_size=spec.eval.batch_size)
    texts = decode(tokenizer, responses)
    groups = rankings(prompts, [texts[i * k: (i + 1) * k] for i in range(len(prompts))], ev.reward)
    write_jsonl(data / "preferences.jsonl", groups)
    study.log(f"preferences: {len(groups)} rankings of up to {k} SFT samples ({len(prompts) - len(groups)} "
              "prompts dropped: tied or identical samples)")


def _evaluator(study: Study) -> Evaluator:
    spec = study.spec
    return Evaluator(load_tokenizer(study.sft_dir), load_policy(study.sft_dir),
                     read_jsonl(study.data / "eval_prompts.jsonl"), load_reward_fn(spec.task.reward), spec.eval,
                     spec.seed)


def _baseline(study: Study, ev: Evaluator) -> None:
    """The SFT model's own point (KL 0) — the start of every method's curve."""
    path = study.run_dir("sft") / "result.json"
    h = _hash({"base": _base_fingerprint(study.spec), "eval": study.spec.eval.model_dump()})
    if path.is_file() and json.loads(path.read_text()).get("hash") == h:
        return
    point = ev.point(ev.sft)
    wins = {f"{t:g}": 0.5 for t in study.spec.eval.temperatures}  # against itself
    write_json(path, {"run": "sft", "method": "sft", "knob": None, "value": None, "hash": h,
                      "points": [{"step": 0, **point}], "win_rates": wins})
    study.log(f"sft: reward {point['reward']:.3f}, KL {point['kl']:.3f}")


# ------------------------------------------------------------------------------------------------- one run

def _run_hash(study: Study, sweep: RunSweep, value: float) -> str:
    return _hash({"base": _base_fingerprint(study.spec), "eval": study.spec.eval.model_dump(),
                  "method": sweep.method, "config": sweep.run_config(value), "reward": study.spec.task.reward})


def _stage_config(study: Study, sweep: RunSweep, value: float, train_dir: Path, threads: int | None) -> dict:
    spec = study.spec
    cfg: dict[str, Any] = {"tensorboard": False, **sweep.run_config(value)}
    steps = int(cfg["max_steps"])
    cfg.update(model=str(study.sft_dir), output_dir=str(train_dir), seed=spec.seed, threads=threads, progress=False,
               resume="auto", save_every=max(1, steps // spec.eval.checkpoints),
               keep_checkpoints=spec.eval.checkpoints)
    if sweep.stage == "ppo":
        cfg.setdefault("max_new_tokens", spec.eval.max_new_tokens)
        cfg.update(data=str(study.data / "prompts.jsonl"), reward_fn=spec.task.reward)
    else:
        cfg["data"] = str(study.data / "preferences.jsonl")
    return cfg


def _is_complete(study: Study, sweep: RunSweep, value: float) -> bool:
    path = study.run_dir(study.run_id(sweep, value)) / "result.json"
    return path.is_file() and json.loads(path.read_text()).get("hash") == _run_hash(study, sweep, value)


def _run_one(study: Study, ev: Evaluator, sweep: RunSweep, value: float, threads: int | None) -> None:
    """Train one run (from scratch when its folder was made with other settings) and measure it."""
    run_id = study.run_id(sweep, value)
    run_dir = study.run_dir(run_id)
    h = _run_hash(study, sweep, value)
    result_path = run_dir / "result.json"
    stamp = run_dir / "run.json"
    if run_dir.exists() and (not stamp.is_file() or json.loads(stamp.read_text()).get("hash") != h):
        shutil.rmtree(run_dir)  # made with other settings: start over
    write_json(stamp, {"hash": h, "method": sweep.method, "knob": sweep.knob, "value": value,
                       "config": sweep.run_config(value)})
    train_dir = run_dir / "train"
    study.log(f"{run_id}: training ({sweep.stage})")
    t0 = time.perf_counter()
    result = run_stage(sweep.stage, _stage_config(study, sweep, value, train_dir, threads))
    train_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    points = []
    for ckpt in checkpoints(train_dir):
        policy = load_checkpoint_policy(study.sft_dir, ckpt)
        points.append({"step": int(ckpt.name.split("-")[1]), **ev.point(policy)})
    wins = ev.win_rates(policy)
    eval_s = time.perf_counter() - t0
    final = points[-1]
    write_json(result_path, {
        "run": run_id, "method": sweep.method, "knob": sweep.knob, "value": value, "hash": h, "points": points,
        "win_rates": wins, "train": _train_summary(result.history),
        "seconds": {"train": round(train_s, 2), "eval": round(eval_s, 2)}})
    if not study.spec.keep_models:
        shutil.rmtree(train_dir / "checkpoints", ignore_errors=True)
        shutil.rmtree(train_dir / "final", ignore_errors=True)
    study.log(f"{run_id}: reward {final['reward']:.3f}, KL {final['kl']:.3f}, win rate at T=1 "
              f"{wins.get('1', float('nan')):.2f} (train {train_s:.0f}s, eval {eval_s:.0f}s)")


# ------------------------------------------------------------------------------------------------- on Ray

def _ray_run(spec_path: str, out: str, run_id: str, threads: int | None) -> str:
    """One run as a Ray task: the study rebuilt from its spec file, then train and measure (threads restored
    after: Ray reuses the worker process)."""
    spec, _ = load_spec(spec_path)
    study = Study(spec, Path(out), Path(spec_path).parent, stderr_log)
    sweep, value = next((sw, v) for sw in spec.runs for v in sw.values if study.run_id(sw, v) == run_id)
    with torch_threads(threads or 1):
        _run_one(study, _evaluator(study), sweep, value, threads)
    return run_id


def _run_on_ray(study: Study, spec_path: Path, run_ids: list[str], threads: int | None,
                address: str | None) -> list[str]:
    """Run `run_ids` as Ray tasks of `threads` CPUs each; returns them in the order they finished."""
    with ray_session(address) as ray:
        task = ray.remote(_ray_run)
        pending = {task.options(num_cpus=threads or 1, max_retries=2, name=f"frontier:{rid}").remote(
            str(spec_path.resolve()), str(study.out.resolve()), rid, threads): rid for rid in run_ids}
        study.log(f"{len(pending)} runs submitted to the Ray cluster")
        done_ids: list[str] = []
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            for ref in done:
                ray.get(ref)  # a failed run raises here, with its error
                done_ids.append(pending.pop(ref))
    return done_ids


def _train_summary(history: list[dict]) -> dict:
    """The last logged loss and the stage's own held-out metrics (preference accuracy, PPO eval reward)."""
    out: dict[str, Any] = {}
    for rec in history:
        for k, v in rec.items():
            if k in ("loss", "eval_preference_accuracy", "eval_reward", "eval_kl") and isinstance(v, (int, float)):
                out[k] = v
    return out


def _run_seconds(study: Study) -> dict:
    out = {}
    for path in sorted((study.out / "runs").glob("*/result.json")):
        seconds = json.loads(path.read_text()).get("seconds")
        if seconds:
            out[path.parent.name] = seconds
    return out
