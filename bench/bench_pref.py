"""Preference-training throughput: flanmix RM / DPO / PPO vs TRL RewardTrainer, DPOTrainer and TRL 1.12's PPOTrainer.

Same machine, same run, same random tiny Llama (init-model `tiny`, vocab 4096), same data (verifiable preference
pairs from the bundled string/list tasks, sequences <= 128 tokens), batch 8, fp32, no activation checkpointing.
Every (method, implementation) runs in its own subprocess so its peak RSS is its own; baseline and flanmix run
back to back, `--repeats` times, and the medians are reported.

    python bench/bench_pref.py                 # full: 30 timed steps after 5 warm-up steps
    python bench/bench_pref.py --steps 8 --quick

Steps/s is measured between the end of warm-up step `--warmup` and the last step (data, forward, backward,
optimizer; for PPO one update = rollout of 8 prompts x 32 new tokens + one PPO epoch). flanmix DPO precomputes
the reference log-probs before training; that one-off setup (model load, tokenization, the reference pass) is
reported as `setup_s` and is not in steps/s.
TRL 1.12 (the last release with PPO) is installed into bench/.trl112 on first use:
`pip install --no-deps --target bench/.trl112 trl==1.12.0`.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
TRL112 = HERE / ".trl112"
BATCH, MAX_LEN, NEW_TOKENS, LR = 8, 128, 32, 1e-5


# --------------------------------------------------------------------------------------------- workspace

def prepare(work: Path, n_pairs: int) -> None:
    """Tiny model, a reward-model folder, preference pairs and prompts (once per benchmark run)."""
    sys.path.insert(0, str(ROOT))
    from flanmix.preferences import rows_from_tasks, write_rows
    from trainers.init_model import init_model
    from trainers.rewards import new_reward_model

    init_model("tiny", work / "model", vocab_size=4096, seed=0)
    rm = new_reward_model(work / "model", seed=0)
    rm.save_pretrained(work / "rm")
    for f in (work / "model").iterdir():
        if f.name.startswith(("tokenizer", "special_tokens", "chat_template")):
            (work / "rm" / f.name).write_bytes(f.read_bytes())
    rows = rows_from_tasks(["cluster:strings", "cluster:lists"], n=max(1, n_pairs // 13 + 1), seed=0,
                           edits="chars")[:n_pairs]
    write_rows(rows, work / "prefs.jsonl")
    write_rows([{"prompt": r["prompt"]} for r in rows], work / "prompts.jsonl")


# ------------------------------------------------------------------------------------------------ workers

class _Clock:
    def __init__(self):
        self.t: list[float] = []

    def tick(self):
        self.t.append(time.perf_counter())


def _rate(clock: _Clock, warmup: int, steps: int) -> float:
    t = clock.t
    if len(t) < warmup + steps:
        raise RuntimeError(f"only {len(t)} steps timed")
    return steps / (t[warmup + steps - 1] - t[warmup - 1])


def _trl_callback(clock: _Clock):
    from transformers import TrainerCallback

    class Tick(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            clock.tick()

    return Tick()


def _no_checkpointing(cls) -> dict:
    fields = getattr(cls, "__dataclass_fields__", {})
    out = {"gradient_checkpointing": False}
    if "activation_checkpointing" in fields:
        out = {"activation_checkpointing": False}
    return out


def _trl_common(cls, work: Path, steps: int) -> dict:
    return dict(output_dir=str(work / "trl_out"), per_device_train_batch_size=BATCH, max_steps=steps,
                learning_rate=LR, bf16=False, use_cpu=True, report_to=[], save_strategy="no",
                logging_strategy="no", disable_tqdm=True, dataloader_num_workers=0, seed=0, **_no_checkpointing(cls))


def _rows(work: Path) -> list[dict]:
    return [json.loads(x) for x in (work / "prefs.jsonl").read_text().splitlines()]


def _ours_stage_run(stage, work: Path, steps: int, clock: _Clock) -> None:
    from trainers import loop
    from trainers.config import LoopSettings

    orig = stage.loss

    def timed(model, batch):
        out = orig(model, batch)
        clock.tick()
        return out

    stage.loss = timed
    cfg = LoopSettings(output_dir=str(work / f"ours_{stage.name}"), batch_size=BATCH, max_steps=steps + 1,
                       lr=LR, log_every=10_000, progress=False, tensorboard=False, save_final=False,
                       resume="never", schedule="constant", seed=0)
    loop.train(stage, cfg)


def worker(method: str, impl: str, work: Path, warmup: int, steps: int, threads: int) -> dict:
    import torch

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    clock = _Clock()
    total = warmup + steps
    setup_s = 0.0
    if impl == "ours":
        sys.path.insert(0, str(ROOT))
        if method == "rm":
            from trainers.rm import RMConfig, build_stage

            stage = build_stage(RMConfig(model=str(work / "model"), data=str(work / "prefs.jsonl"),
                                         output_dir=str(work / "ours_rm"), eval_fraction=0.0, max_length=MAX_LEN))
        elif method in ("dpo", "dpo-pre"):
            from trainers.dpo import DPOConfig, build_stage

            t0 = time.perf_counter()
            stage = build_stage(DPOConfig(model=str(work / "model"), data=str(work / "prefs.jsonl"),
                                          output_dir=str(work / "ours_dpo"), eval_fraction=0.0,
                                          max_length=MAX_LEN, beta=0.1))
            setup_s = time.perf_counter() - t0
        else:
            from trainers.ppo import PPOConfig, build_stage

            stage = build_stage(PPOConfig(model=str(work / "model"), reward_model=str(work / "rm"),
                                          data=str(work / "prompts.jsonl"), output_dir=str(work / "ours_ppo"),
                                          rollout_batch_size=BATCH, mini_batch_size=BATCH, ppo_epochs=1,
                                          max_new_tokens=NEW_TOKENS, max_prompt_length=MAX_LEN - NEW_TOKENS,
                                          kl_coef=0.05, max_steps=total + 1))
        # ticks at the end of every loss call: consecutive ticks are one full step apart, as TRL's on_step_end
        _ours_stage_run(stage, work, total, clock)
    else:
        from datasets import Dataset

        if method == "rm":
            import trl

            from trainers.rewards import new_reward_model

            args = trl.RewardConfig(max_length=MAX_LEN, **_trl_common(trl.RewardConfig, work, total))
            tr = trl.RewardTrainer(model=new_reward_model(work / "model", seed=0), args=args,
                                   processing_class=_tok(work), train_dataset=Dataset.from_list(_rows(work)),
                                   callbacks=[_trl_callback(clock)])
            tr.train()
        elif method in ("dpo", "dpo-pre"):
            import trl
            from transformers import AutoModelForCausalLM

            # dpo-pre: TRL also precomputes the reference log-probs (its optional mode) - isolates that effect
            args = trl.DPOConfig(max_length=MAX_LEN, beta=0.1, precompute_ref_log_probs=(method == "dpo-pre"),
                                 **_trl_common(trl.DPOConfig, work, total))
            tr = trl.DPOTrainer(model=AutoModelForCausalLM.from_pretrained(work / "model"), args=args,
                                processing_class=_tok(work), train_dataset=Dataset.from_list(_rows(work)),
                                callbacks=[_trl_callback(clock)])
            tr.train()
        else:
            from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification
            from trl.experimental.ppo import PPOConfig, PPOTrainer

            tok = _tok(work)
            prompts = [json.loads(x)["prompt"] for x in (work / "prompts.jsonl").read_text().splitlines()]
            ds = Dataset.from_list([{"input_ids": tok(p)["input_ids"][-(MAX_LEN - NEW_TOKENS):]} for p in prompts])
            common = _trl_common(PPOConfig, work, total)
            common.pop("max_steps")
            args = PPOConfig(**common, num_mini_batches=1, num_ppo_epochs=1, response_length=NEW_TOKENS,
                             total_episodes=BATCH * total, num_sample_generations=0, stop_token="eos",
                             kl_coef=0.05, local_rollout_forward_batch_size=BATCH)
            tr = PPOTrainer(args=args, processing_class=tok,
                            model=AutoModelForCausalLM.from_pretrained(work / "model"),
                            ref_model=AutoModelForCausalLM.from_pretrained(work / "model"),
                            reward_model=AutoModelForSequenceClassification.from_pretrained(work / "rm"),
                            value_model=AutoModelForSequenceClassification.from_pretrained(work / "rm"),
                            train_dataset=ds, callbacks=[_trl_callback(clock)])
            tr.train()
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"method": method, "impl": impl, "steps_per_s": _rate(clock, warmup, steps), "peak_rss_mb": peak_mb,
            "setup_s": round(setup_s, 3), "timed_steps": steps}


def _tok(work: Path):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(work / "model")
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


# --------------------------------------------------------------------------------------------------- main

def run_one(method: str, impl: str, work: Path, warmup: int, steps: int, threads: int) -> dict:
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TOKENIZERS_PARALLELISM="false",
               TRANSFORMERS_VERBOSITY="error", PYTHONWARNINGS="ignore")
    paths = [str(HERE), str(ROOT)]
    if impl == "trl" and method == "ppo":
        if not (TRL112 / "trl").is_dir():
            subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(TRL112),
                            "trl==1.12.0"], check=True)
            (TRL112 / ".gitignore").write_text("*\n")
        paths.insert(0, str(TRL112))
    env["PYTHONPATH"] = os.pathsep.join(paths + [env.get("PYTHONPATH", "")])
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--worker", method, impl, "--work",
                           str(work), "--warmup", str(warmup), "--steps", str(steps), "--threads", str(threads)],
                          env=env, capture_output=True, text=True)
    lines = [x for x in proc.stdout.splitlines() if x.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise SystemExit(f"{impl} {method} failed:\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1])


TARGETS = {"rm": 1.2, "dpo": 1.5, "dpo-pre": None, "ppo": 1.5}
BASELINE_NAME = {"rm": "TRL 1.16 RewardTrainer", "dpo": "TRL 1.16 DPOTrainer",
                 "dpo-pre": "TRL 1.16 DPOTrainer, precompute_ref_log_probs", "ppo": "TRL 1.12 PPOTrainer"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--worker", nargs=2, metavar=("METHOD", "IMPL"))
    ap.add_argument("--work")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--pairs", type=int, default=128)
    ap.add_argument("--methods", nargs="+", default=["rm", "dpo", "ppo"])
    ap.add_argument("--quick", action="store_true", help="3 warm-up steps")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads per run, the same for both (default 1: steadier on a shared 2-core box)")
    ap.add_argument("--out", default=str(HERE / "results" / "pref.json"))
    ap.add_argument("--merge", action="store_true", help="keep the other methods already in --out")
    args = ap.parse_args()
    if args.quick:
        args.warmup = 3
    if args.worker:
        print(json.dumps(worker(args.worker[0], args.worker[1], Path(args.work), args.warmup, args.steps,
                                args.threads)))
        return
    with tempfile.TemporaryDirectory(prefix="bench_pref_") as tmp:
        work = Path(tmp)
        prepare(work, args.pairs)
        runs: dict[str, dict[str, list[dict]]] = {}
        for rep in range(args.repeats):
            for method in args.methods:
                for impl in ("trl", "ours"):
                    r = run_one(method, impl, work, args.warmup, args.steps, args.threads)
                    runs.setdefault(method, {}).setdefault(impl, []).append(r)
                    print(f"  [{rep + 1}/{args.repeats}] {method:4s} {impl:4s} {r['steps_per_s']:.2f} steps/s "
                          f"{r['peak_rss_mb']:.0f} MB", file=sys.stderr, flush=True)
    results = {"machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
               "settings": {"batch": BATCH, "max_length": MAX_LEN, "ppo_new_tokens": NEW_TOKENS, "lr": LR,
                            "warmup": args.warmup, "steps": args.steps, "repeats": args.repeats,
                            "threads": args.threads, "load_average": os.getloadavg(),
                            "pairs": args.pairs, "model": "init-model tiny, vocab 4096"},
               "methods": {}}
    lines = ["| method | baseline | baseline steps/s | flanmix steps/s | speed-up (target) | baseline peak RSS | "
             "flanmix peak RSS |", "|---|---|---|---|---|---|---|"]
    for method, by in runs.items():
        med = {impl: {k: statistics.median(r[k] for r in rs) for k in ("steps_per_s", "peak_rss_mb", "setup_s")}
               for impl, rs in by.items()}
        ratio = med["ours"]["steps_per_s"] / med["trl"]["steps_per_s"]
        results["methods"][method] = {"baseline": BASELINE_NAME[method], **{impl: med[impl] for impl in med},
                                      "speedup": ratio, "target": TARGETS[method],
                                      "rss_ratio": med["ours"]["peak_rss_mb"] / med["trl"]["peak_rss_mb"],
                                      "runs": by}
        extra = (f" (+{med['ours']['setup_s']:.1f} s one-off setup incl. reference log-probs)"
                 if method.startswith("dpo") else "")
        target = f"{TARGETS[method]}x" if TARGETS[method] else "-"
        lines.append(f"| {method} | {BASELINE_NAME[method]} | {med['trl']['steps_per_s']:.2f} | "
                     f"{med['ours']['steps_per_s']:.2f}{extra} | {ratio:.2f}x ({target}) | "
                     f"{med['trl']['peak_rss_mb']:.0f} MB | {med['ours']['peak_rss_mb']:.0f} MB |")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if args.merge and out.is_file():
        old = json.loads(out.read_text())
        for method, res in old.get("methods", {}).items():
            if method not in results["methods"]:
                res.setdefault("settings", old.get("settings"))
                results["methods"][method] = res
        results["methods"] = {m: results["methods"][m] for m in TARGETS if m in results["methods"]}
    for res in results["methods"].values():
        res.setdefault("settings", results["settings"])
    out.write_text(json.dumps(results, indent=1))
    print("\n".join(lines))
    print(f"\nPPO steps are updates (rollout of {BATCH} x {NEW_TOKENS} tokens + 1 epoch). Results: {out}")


if __name__ == "__main__":
    main()
