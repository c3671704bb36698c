"""SFT throughput and memory: flanmix's loop vs TRL's SFTTrainer on the same tiny model, data and machine.

    python bench/bench_sft.py [--steps 60] [--warmup 8] [--repeats 2] [--threads 0]

Model: `init-model --size tiny` (≈1.1M-parameter Llama, byte-level BPE 4096) with a tokenizer trained on the data.
Data: prompt/completion rows rendered from the bundled tasks (Flan-style, short targets), max_length 128, batch 8,
fp32, the tokenizer trained on `flanmix.corpus.bundled_corpus()` (init-model's default), AdamW lr 1e-3 betas
(0.9, 0.999), linear decay, grad clip 1.0, completion-only loss in both.

Every configuration runs in its own subprocess (so peak RSS is that run's alone), in alternating order, `repeats`
times; medians are reported. tokens/s counts the real (non-pad) input tokens of the timed steps (after `warmup`
steps) over their wall time. TRL gets the exact token ids flanmix uses (a pre-tokenized dataset with
`completion_mask`), so the first-batch losses are comparable; TRL is run with bf16=False, use_cpu=True and
gradient checkpointing off ("trl"), and also with its defaults apart from use_cpu ("trl_defaults"). flanmix runs
with its SFT defaults (length-grouped batches) and, for reference, without grouping ("flanmix_ungrouped").

Writes bench/results/sft.json and prints a markdown table. TRL is a bench-only dependency.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BATCH, MAX_LEN, LR = 8, 128, 1e-3


# ------------------------------------------------------------------------------------------------- preparation

def render_rows(n: int, seed: int = 0, *, keep: Callable | None = None, make_row: Callable | None = None
                ) -> list[dict]:
    """Rows rendered from the bundled tasks, round-robin over tasks and templates. `keep(task)` picks the tasks
    (default: the locally generated ones - the FLAN catalog's tasks read hub datasets); `make_row(inputs, targets)`
    makes a row (default: prompt/completion, the completion starting with a space)."""
    from flanmix.registry import Registry, in_flan_catalog

    keep = keep or (lambda t: not in_flan_catalog(t) and t.examples("train"))
    make_row = make_row or (lambda inputs, targets: {"prompt": inputs, "completion": " " + targets})
    rng = random.Random(seed)
    tasks = [t for t in Registry.discover(()) if keep(t)]
    rows = []
    i = 0
    while len(rows) < n:
        task = tasks[i % len(tasks)]
        examples = task.examples("train")
        ex = examples[rng.randrange(len(examples))]
        idx = task.template_indices(cot=False)
        row = task.render(ex, template_type="zs_noopt", template_idx=idx[i % len(idx)], cot=False, seed=seed)
        if row["targets"].strip():
            rows.append(make_row(row["inputs"], row["targets"].strip()))
        i += 1
    rng.shuffle(rows)
    return rows


def prepare(work: Path, n_rows: int) -> None:
    from trainers.data import tokenize_rows
    from trainers.init_model import init_model
    from trainers.models import load_tokenizer

    rows = render_rows(n_rows)
    (work / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    from flanmix.corpus import bundled_corpus

    texts = bundled_corpus(max_rows=20000, seed=0)  # what `flanmix init-model` uses by default
    info = init_model("tiny", work / "model", vocab_size=4096, texts=texts, seed=0, overwrite=True)
    tok = load_tokenizer(work / "model")
    examples, stats = tokenize_rows(tok, rows, max_length=MAX_LEN, truncation="truncate")
    with (work / "tokenized.jsonl").open("w") as f:
        for e in examples:
            f.write(json.dumps({"input_ids": e["input_ids"],
                                "completion_mask": [int(t != -100) for t in e["labels"]]}) + "\n")
    meta = {"params": info["params"], "vocab": info["vocab_size"], "rows": len(examples), **stats.as_dict()}
    (work / "meta.json").write_text(json.dumps(meta))


# ----------------------------------------------------------------------------------------------------- children

def peak_rss_mb() -> float:
    """This process's peak resident set size (MB), as getrusage reports it."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def loop_rates(history: list[dict], warmup: int) -> dict:
    """tokens/s, steps/s, tokens/step and peak RSS of a flanmix run's logged steps after `warmup`."""
    timed = [h for h in history if "tokens" in h][warmup:]
    tokens, secs = sum(h["tokens"] for h in timed), sum(h["time_s"] for h in timed)
    return {"tokens_per_s": tokens / secs, "steps_per_s": len(timed) / secs, "peak_rss_mb": peak_rss_mb(),
            "tokens_per_step": tokens / len(timed), "first_logged_loss": history[0]["loss"]}


def trainer_rates(tokens: int, secs: float, steps: int) -> dict:
    """The same rates for a transformers Trainer timed by `time_trainer`."""
    return {"tokens_per_s": tokens / secs, "steps_per_s": steps / secs, "peak_rss_mb": peak_rss_mb(),
            "tokens_per_step": tokens / steps}


def child_flanmix(work: Path, packed: bool, steps: int, warmup: int, group: bool = True) -> dict:
    from trainers.loop import train
    from trainers.sft import SFTConfig, SFTStage

    out = Path(tempfile.mkdtemp(prefix="bench-flanmix-"))
    cfg = SFTConfig(model=str(work / "model"), data=str(work / "rows.jsonl"), output_dir=str(out),
                    batch_size=BATCH, max_length=MAX_LEN, packing=packed, max_steps=warmup + steps, lr=LR,
                    betas=(0.9, 0.999), weight_decay=0.0, schedule="linear", min_lr_ratio=0.0, max_grad_norm=1.0,
                    mixed_precision="no", log_every=1, progress=False, tensorboard=False, save_final=False,
                    resume="never", seed=0, group_by_length=group)
    return loop_rates(train(SFTStage(cfg, verbose=False), cfg).history, warmup)


def _trl_trainer(work: Path, packed: bool, max_steps: int, defaults: bool, out: Path):
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    tok = AutoTokenizer.from_pretrained(work / "model")
    model = AutoModelForCausalLM.from_pretrained(work / "model", dtype=torch.float32)
    rows = [json.loads(x) for x in (work / "tokenized.jsonl").read_text().splitlines()]
    ds = Dataset.from_list(rows)
    common = dict(output_dir=str(out), per_device_train_batch_size=BATCH, max_length=MAX_LEN, use_cpu=True,
                  max_steps=max_steps, logging_steps=10_000, save_strategy="no", report_to=[], learning_rate=LR,
                  lr_scheduler_type="linear", dataloader_num_workers=0, seed=0, disable_tqdm=True,
                  packing=packed, completion_only_loss=True)
    if not defaults:
        common.update(bf16=False, gradient_checkpointing=False, max_grad_norm=1.0, weight_decay=0.0)
    args = SFTConfig(**common)
    return SFTTrainer(model=model, args=args, train_dataset=ds, processing_class=tok)


def time_trainer(trainer, count_tokens, warmup: int) -> tuple[int, float, int]:
    """Train a transformers Trainer and time its steps after `warmup`: (tokens, seconds, steps). `count_tokens`
    counts a collated batch's tokens as flanmix counts them. The wall time runs from the first timed step's start to
    the last one's end, so data loading between steps is included."""
    from transformers import TrainerCallback

    counts: list[int] = []
    times: list[tuple[float, float]] = []
    collate = trainer.data_collator

    def counting(examples):
        batch = collate(examples)
        counts.append(count_tokens(batch))
        return batch

    class Timer(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            self.t = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            times.append((self.t, time.perf_counter()))

    trainer.data_collator = counting
    trainer.add_callback(Timer())
    trainer.train()
    timed = times[warmup:]
    return sum(counts[warmup:warmup + len(timed)]), timed[-1][1] - timed[0][0], len(timed)


def _real_tokens(batch) -> int:
    am = batch.get("attention_mask")
    return int(am.sum()) if am is not None else int(batch["input_ids"].numel())


def child_trl(work: Path, packed: bool, steps: int, warmup: int, defaults: bool) -> dict:
    out = Path(tempfile.mkdtemp(prefix="bench-trl-"))
    trainer = _trl_trainer(work, packed, warmup + steps, defaults, out)
    return trainer_rates(*time_trainer(trainer, _real_tokens, warmup))


def child_first_loss(work: Path) -> dict:
    """Loss of the same first batch (first 8 rows, unpacked) computed by flanmix's stage and by TRL."""
    import torch

    from trainers.sft import SFTConfig, SFTStage

    out = Path(tempfile.mkdtemp(prefix="bench-first-"))
    trainer = _trl_trainer(work, False, 1, False, out)
    model = trainer.model.eval()
    cfg = SFTConfig(model=str(work / "model"), data=str(work / "rows.jsonl"), output_dir=str(out),
                    max_length=MAX_LEN)
    stage = SFTStage(cfg, model=model, tokenizer=trainer.processing_class, verbose=False)
    trl_rows = [trainer.train_dataset[i] for i in range(BATCH)]
    same_ids = all(list(r["input_ids"]) == e["input_ids"] for r, e in zip(trl_rows, stage.items[:BATCH]))
    with torch.no_grad():
        ours, _ = stage.loss(model, stage.collate(stage.items[:BATCH]))
        theirs = trainer.compute_loss(model, trainer.data_collator(trl_rows))
    return {"flanmix": float(ours), "trl": float(theirs), "same_input_ids": same_ids,
            "abs_diff": abs(float(ours) - float(theirs))}


# --------------------------------------------------------------------------------------------------------- main

CONFIGS = {
    "flanmix": ("flanmix", False), "flanmix_ungrouped": ("flanmix_ungrouped", False),
    "flanmix_packed": ("flanmix", True),
    "trl": ("trl", False), "trl_packed": ("trl", True), "trl_defaults": ("trl_defaults", False),
}


def run_child(mode: str, work: Path, args, script: str = __file__) -> dict:
    """Run configuration `mode` of bench `script` in a fresh process; its RESULT line as a dict."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TOKENIZERS_PARALLELISM="false",
               PYTHONPATH=str(REPO), TRANSFORMERS_VERBOSITY="error")
    if args.threads:
        env["OMP_NUM_THREADS"] = str(args.threads)
    cmd = [sys.executable, script, "--child", mode, "--work", str(work), "--steps", str(args.steps),
           "--warmup", str(args.warmup)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=REPO)
    lines = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"{mode} failed:\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def alternate(configs: Sequence[str], repeats: int, run: Callable[[str], dict]) -> dict[str, list[dict]]:
    """`repeats` rounds of `run(config)` over every configuration in turn (machine-load drifts hit them alike)."""
    runs: dict[str, list[dict]] = {c: [] for c in configs}
    for _ in range(repeats):
        for c in configs:
            runs[c].append(run(c))
    return runs


def summarize(runs: dict[str, list[dict]], pairs: Sequence[tuple[str, str]]) -> tuple[dict, dict]:
    """Medians per configuration, and flanmix/baseline ratios of tokens/s and peak RSS for `pairs` present."""
    def med(c, k):
        return statistics.median(r[k] for r in runs[c])

    summary = {c: {"tokens_per_s": med(c, "tokens_per_s"), "peak_rss_mb": med(c, "peak_rss_mb"),
                   "tokens_per_step": med(c, "tokens_per_step"), "runs": runs[c]} for c in runs}
    ratios = {}
    for ours, theirs in pairs:
        if ours in summary and theirs in summary:
            ratios[f"{ours}/{theirs}"] = {
                "tokens_per_s": summary[ours]["tokens_per_s"] / summary[theirs]["tokens_per_s"],
                "peak_rss": summary[ours]["peak_rss_mb"] / summary[theirs]["peak_rss_mb"]}
    return summary, ratios


def report(result: dict, out: Path, heading: str) -> None:
    """Write `result` to `out` and print its table of medians and its ratios under `heading`."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    print(f"\n{heading}\n")
    print("| config | tokens/s | peak RSS (MB) | tokens/step |")
    print("|---|---:|---:|---:|")
    for c, s in result["results"].items():
        print(f"| {c} | {s['tokens_per_s']:,.0f} | {s['peak_rss_mb']:,.0f} | {s['tokens_per_step']:,.0f} |")
    print()
    for k, v in result["ratios"].items():
        print(f"- {k}: {v['tokens_per_s']:.2f}x tokens/s, {v['peak_rss']:.2f}x peak RSS")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=60, help="timed optimizer steps per run")
    ap.add_argument("--warmup", type=int, default=8, help="untimed steps at the start of each run")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--rows", type=int, default=4000)
    ap.add_argument("--threads", type=int, default=1,
                    help="OMP_NUM_THREADS for every run (0: torch default). 1 by default: on a shared 2-core "
                         "machine two spinning intra-op threads per process made tiny models many times slower")
    ap.add_argument("--configs", default=",".join(CONFIGS))
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "sft.json"))
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--work", help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.child:
        import torch

        torch.manual_seed(0)
        work = Path(args.work)
        if args.child == "first_loss":
            res = child_first_loss(work)
        else:
            kind, packed = CONFIGS[args.child]
            if kind.startswith("flanmix"):
                res = child_flanmix(work, packed, args.steps, args.warmup, group=kind == "flanmix")
            else:
                res = child_trl(work, packed, args.steps, args.warmup, kind == "trl_defaults")
        print("RESULT " + json.dumps(res), flush=True)
        return

    sys.path.insert(0, str(REPO))
    work = Path(tempfile.mkdtemp(prefix="bench-sft-"))
    t0 = time.time()
    prepare(work, args.rows)
    meta = json.loads((work / "meta.json").read_text())
    configs = args.configs.split(",")
    runs = alternate(configs, args.repeats, lambda c: run_child(c, work, args))
    first = run_child("first_loss", work, args)

    summary, ratios = summarize(runs, (("flanmix", "trl"), ("flanmix_ungrouped", "trl"),
                                       ("flanmix_packed", "trl_packed"), ("flanmix", "trl_defaults")))
    import torch
    import transformers
    import trl

    result = {
        "setup": {"model": "init-model tiny", **meta, "batch_size": BATCH, "max_length": MAX_LEN, "dtype": "fp32",
                  "steps": args.steps, "warmup": args.warmup, "repeats": args.repeats,
                  "threads": args.threads or torch.get_num_threads(), "torch": torch.__version__,
                  "transformers": transformers.__version__, "trl": trl.__version__, "cpus": os.cpu_count()},
        "results": summary, "ratios": ratios, "first_batch_loss": first,
        "wall_s": time.time() - t0,
    }
    report(result, Path(args.out), f"SFT bench: {meta['params']:,}-param Llama, vocab {meta['vocab']}, batch "
           f"{BATCH}, max_length {MAX_LEN}, fp32, {args.steps} timed steps x {args.repeats} runs (medians)")
    print(f"- first batch loss: flanmix {first['flanmix']:.6f}, TRL {first['trl']:.6f} "
          f"(|diff| {first['abs_diff']:.2e}, same input ids: {first['same_input_ids']})")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
