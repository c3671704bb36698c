"""LoRA benchmark, one run: flanmix LoRA SFT vs TRL SFTTrainer + PEFT (tokens/s), flanmix LoRA DPO vs TRL
DPOTrainer + PEFT (steps/s), and the peak memory of LoRA DPO vs full DPO on the `base` rung.

    python bench/bench_lora.py [--sft-steps 50] [--dpo-steps 20] [--repeats 2]      # about 10 minutes

Same adapter everywhere: LoRA r=16, alpha=32, no dropout, on every linear layer but the output head (PEFT's
"all-linear"), fp32, no activation checkpointing. SFT reuses `bench_sft.py`'s set-up (tiny Llama, bundled-task
prompt/completion rows, batch 8, max_length 128; TRL gets flanmix's exact token ids with a completion mask) and DPO
`bench_pref.py`'s (tiny Llama, verifiable pairs, batch 8); their helpers are imported, not copied. flanmix DPO runs
in its default mode (reference log-probs computed once from the adapter-disabled base) and, for an
apples-to-apples row, with `reference_mode: copy` (the adapter-disabled base on every step, as TRL does).

Memory: `init-model`'s `base` rung shape (26M parameters, the tiny run's tokenizer), DPO batch 8, a few steps,
each configuration in its own process, without and with activation checkpointing. Reported: peak RSS, and the
model's part of it (peak RSS minus the RSS of the same process once the tokenizer and the tokenized pairs exist,
before the model is loaded: weights, reference pass, gradients, optimizer state, activations), which is what a GPU's
allocated memory would show. Without checkpointing, batch-8 activations (the same for LoRA and
full) are a large share of that on a model this small; with it, weights, gradients and Adam states dominate.

Writes bench/results/lora.json and prints a markdown table. TRL and PEFT are bench/dev dependencies.
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
sys.path[:0] = [str(HERE), str(ROOT)]

import bench_pref  # noqa: E402  (the DPO set-up and timing helpers)
import bench_sft  # noqa: E402  (the SFT set-up)

LORA = {"r": 16, "alpha": 32, "dropout": 0.0, "target_modules": "all-linear"}
MEM_STEPS = 4


def rss_mb() -> float:
    """Current resident set size of this process (MB)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_mb() -> float:
    """Peak resident set size of this process (MB): VmHWM, which starts afresh at exec. (getrusage's ru_maxrss
    does not: a child inherits its parent's high-water mark, so every worker would report at least the RSS of
    the process that started it.)"""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def peft_config():
    from peft import LoraConfig

    return LoraConfig(r=LORA["r"], lora_alpha=LORA["alpha"], lora_dropout=LORA["dropout"],
                      target_modules=LORA["target_modules"], task_type="CAUSAL_LM")


# ---------------------------------------------------------------------------------------------------- workers

def sft_ours(work: Path, steps: int, warmup: int) -> dict:
    from trainers.loop import train
    from trainers.sft import SFTConfig, SFTStage

    cfg = SFTConfig(model=str(work / "model"), data=str(work / "rows.jsonl"), output_dir=str(work / "ours_sft"),
                    batch_size=bench_sft.BATCH, max_length=bench_sft.MAX_LEN, max_steps=warmup + steps, lr=1e-3,
                    schedule="linear", min_lr_ratio=0.0, max_grad_norm=1.0, mixed_precision="no", log_every=1,
                    progress=False, tensorboard=False, save_final=False, resume="never", seed=0, peft=LORA)
    res = train(SFTStage(cfg, verbose=False), cfg)
    timed = [h for h in res.history if "tokens" in h][warmup:]
    tokens, secs = sum(h["tokens"] for h in timed), sum(h["time_s"] for h in timed)
    return {"tokens_per_s": tokens / secs, "steps_per_s": len(timed) / secs, "peak_rss_mb": peak_mb()}


def sft_trl(work: Path, steps: int, warmup: int) -> dict:
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    rows = [json.loads(x) for x in (work / "tokenized.jsonl").read_text().splitlines()]
    args = SFTConfig(output_dir=str(work / "trl_sft"), per_device_train_batch_size=bench_sft.BATCH,
                     max_length=bench_sft.MAX_LEN, use_cpu=True, max_steps=warmup + steps, logging_steps=10_000,
                     save_strategy="no", report_to=[], learning_rate=1e-3, lr_scheduler_type="linear",
                     dataloader_num_workers=0, seed=0, disable_tqdm=True, completion_only_loss=True, bf16=False,
                     gradient_checkpointing=False, max_grad_norm=1.0, weight_decay=0.0)
    trainer = SFTTrainer(model=AutoModelForCausalLM.from_pretrained(work / "model", dtype=torch.float32), args=args,
                         train_dataset=Dataset.from_list(rows), processing_class=AutoTokenizer.from_pretrained(
                             work / "model"), peft_config=peft_config())
    # real (non-pad) tokens of every batch, as flanmix counts them
    tokens, secs, n = bench_sft.time_trainer(trainer, lambda b: int(b["attention_mask"].sum()), warmup)
    return {"tokens_per_s": tokens / secs, "steps_per_s": n / secs, "peak_rss_mb": peak_mb()}


def dpo_ours(work: Path, steps: int, warmup: int, reference: str = "precomputed") -> dict:
    from trainers.dpo import DPOConfig, build_stage

    clock = bench_pref._Clock()
    t0 = time.perf_counter()
    stage = build_stage(DPOConfig(model=str(work / "model"), data=str(work / "prefs.jsonl"),
                                  output_dir=str(work / "ours_dpo"), eval_fraction=0.0, max_length=bench_pref.MAX_LEN,
                                  beta=0.1, reference_mode=reference, peft=LORA))
    setup_s = time.perf_counter() - t0
    bench_pref._ours_stage_run(stage, work, warmup + steps, clock)
    return {"steps_per_s": bench_pref._rate(clock, warmup, steps), "peak_rss_mb": peak_mb(), "setup_s": setup_s}


def dpo_trl(work: Path, steps: int, warmup: int) -> dict:
    import trl
    from datasets import Dataset
    from transformers import AutoModelForCausalLM

    clock = bench_pref._Clock()
    args = trl.DPOConfig(max_length=bench_pref.MAX_LEN, beta=0.1,
                         **bench_pref._trl_common(trl.DPOConfig, work, warmup + steps))
    trainer = trl.DPOTrainer(model=AutoModelForCausalLM.from_pretrained(work / "model"), args=args,
                             processing_class=bench_pref._tok(work), peft_config=peft_config(),
                             train_dataset=Dataset.from_list(bench_pref._rows(work)),
                             callbacks=[bench_pref._trl_callback(clock)])
    trainer.train()
    return {"steps_per_s": bench_pref._rate(clock, warmup, steps), "peak_rss_mb": peak_mb()}


def dpo_memory(work: Path, lora: bool, checkpointing: bool = False) -> dict:
    """Peak memory of a few DPO steps on the `base` rung, full or LoRA (same data, batch, reference mode), with or
    without activation checkpointing. The baseline is read after the tokenizer and the tokenized data exist, so the
    difference is what the model costs: weights, reference pass, gradients, optimizer state, activations."""
    from flanmix.preferences import load_preferences
    from trainers import loop
    from trainers.adapters import wrap
    from trainers.config import LoopSettings, PeftSettings
    from trainers.dpo import DPOStage
    from trainers.models import load_tokenizer
    from trainers.policy import load_policy
    from trainers.preference import encode_groups

    tok = load_tokenizer(work / "base")
    groups = encode_groups(tok, load_preferences(work / "prefs.jsonl"), bench_pref.MAX_LEN)
    base_rss = rss_mb()
    model = load_policy(work / "base")
    if lora:
        model = wrap(model, PeftSettings(**LORA), base_path=work / "base")
    stage = DPOStage(model, tok, groups, beta=0.1)
    trainable = sum(p.numel() for p in stage.model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in stage.model.parameters())
    settings = LoopSettings(output_dir=str(work / "mem"), batch_size=bench_pref.BATCH, max_steps=MEM_STEPS,
                            lr=1e-4, log_every=10_000, progress=False, tensorboard=False, save_final=False,
                            resume="never", schedule="constant", seed=0, gradient_checkpointing=checkpointing)
    t0 = time.perf_counter()
    loop.train(stage, settings)
    return {"peak_rss_mb": peak_mb(), "baseline_rss_mb": base_rss, "training_mb": peak_mb() - base_rss,
            "params": total, "trainable": trainable, "seconds": time.perf_counter() - t0}


WORKERS = {
    "sft_ours": lambda w, a: sft_ours(w, a.sft_steps, a.warmup),
    "sft_trl": lambda w, a: sft_trl(w, a.sft_steps, a.warmup),
    "dpo_ours": lambda w, a: dpo_ours(w, a.dpo_steps, a.warmup),
    "dpo_ours_onthefly": lambda w, a: dpo_ours(w, a.dpo_steps, a.warmup, reference="copy"),
    "dpo_trl": lambda w, a: dpo_trl(w, a.dpo_steps, a.warmup),
    "mem_full": lambda w, a: dpo_memory(w, lora=False),
    "mem_lora": lambda w, a: dpo_memory(w, lora=True),
    "mem_full_ckpt": lambda w, a: dpo_memory(w, lora=False, checkpointing=True),
    "mem_lora_ckpt": lambda w, a: dpo_memory(w, lora=True, checkpointing=True),
    "prepare": lambda w, a: prepare(w, a.rows, a.pairs),
}


# -------------------------------------------------------------------------------------------------------- main

def prepare(work: Path, rows: int, pairs: int) -> dict:
    """SFT workspace (bench_sft), DPO workspace (bench_pref) and a `base`-rung model with the DPO tokenizer."""
    import shutil

    import torch
    from transformers import LlamaForCausalLM

    from trainers.init_model import llama_config
    from trainers.models import load_tokenizer

    (work / "sft").mkdir(parents=True)
    (work / "dpo").mkdir()
    bench_sft.prepare(work / "sft", rows)
    bench_pref.prepare(work / "dpo", pairs)
    tok = load_tokenizer(work / "dpo" / "model")
    torch.manual_seed(0)
    model = LlamaForCausalLM(llama_config("base", len(tok), pad_id=tok.pad_token_id, bos_id=tok.bos_token_id,
                                          eos_id=tok.eos_token_id))
    model.save_pretrained(work / "dpo" / "base")
    for f in (work / "dpo" / "model").iterdir():
        if f.name.startswith(("tokenizer", "special_tokens", "chat_template")):
            shutil.copy(f, work / "dpo" / "base" / f.name)
    return {}


def run(name: str, work: Path, args) -> dict:
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TOKENIZERS_PARALLELISM="false",
               TRANSFORMERS_VERBOSITY="error", PYTHONWARNINGS="ignore", OMP_NUM_THREADS=str(args.threads))
    if name.startswith("mem"):
        # glibc keeps freed large blocks in the heap (its mmap threshold grows with them), so RSS would keep the
        # high-water mark of fragmentation; mmap'd tensors are returned at once and RSS follows live memory
        env["MALLOC_MMAP_THRESHOLD_"] = "65536"
    sub = work if name == "prepare" else work / ("sft" if name.startswith("sft") else "dpo")
    cmd = [sys.executable, __file__, "--worker", name, "--work", str(sub), "--sft-steps", str(args.sft_steps),
           "--dpo-steps", str(args.dpo_steps), "--warmup", str(args.warmup), "--threads", str(args.threads),
           "--rows", str(args.rows), "--pairs", str(args.pairs)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=ROOT)
    lines = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise SystemExit(f"{name} failed:\n{proc.stderr[-3000:]}")
    res = json.loads(lines[-1][len("RESULT "):])
    print(f"  {name}: {json.dumps({k: round(v, 2) if isinstance(v, float) else v for k, v in res.items()})}",
          file=sys.stderr, flush=True)
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sft-steps", type=int, default=50)
    ap.add_argument("--dpo-steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=2, help="runs of each speed configuration (medians)")
    ap.add_argument("--rows", type=int, default=2000)
    ap.add_argument("--pairs", type=int, default=128)
    ap.add_argument("--threads", type=int, default=1, help="OMP/torch threads per run, the same for all")
    ap.add_argument("--out", default=str(HERE / "results" / "lora.json"))
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--work", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        import torch

        torch.set_num_threads(args.threads)
        torch.manual_seed(0)
        print("RESULT " + json.dumps(WORKERS[args.worker](Path(args.work), args)), flush=True)
        return

    t0 = time.time()
    with tempfile.TemporaryDirectory(prefix="bench_lora_") as tmp:
        work = Path(tmp)
        run("prepare", work, args)  # in its own process too: this one stays small (see peak_mb)
        names = [n for n in WORKERS if n != "prepare"]
        runs: dict[str, list[dict]] = {name: [] for name in names}
        for rep in range(args.repeats):
            for name in names:  # baseline and flanmix back to back, every repeat; memory (deterministic) once
                if rep == 0 or not name.startswith("mem"):
                    runs[name].append(run(name, work, args))
    med = {name: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for name, rs in runs.items()}
    ratios = {
        "sft_tokens_per_s": med["sft_ours"]["tokens_per_s"] / med["sft_trl"]["tokens_per_s"],
        "dpo_steps_per_s": med["dpo_ours"]["steps_per_s"] / med["dpo_trl"]["steps_per_s"],
        "dpo_onthefly_steps_per_s": med["dpo_ours_onthefly"]["steps_per_s"] / med["dpo_trl"]["steps_per_s"],
        "memory_lora_over_full_training": med["mem_lora"]["training_mb"] / med["mem_full"]["training_mb"],
        "memory_lora_over_full_peak_rss": med["mem_lora"]["peak_rss_mb"] / med["mem_full"]["peak_rss_mb"],
        "memory_ckpt_lora_over_full_training": med["mem_lora_ckpt"]["training_mb"]
        / med["mem_full_ckpt"]["training_mb"],
        "memory_ckpt_lora_over_full_peak_rss": med["mem_lora_ckpt"]["peak_rss_mb"]
        / med["mem_full_ckpt"]["peak_rss_mb"],
    }
    import peft
    import torch
    import transformers
    import trl

    result = {"settings": {"lora": LORA, "sft": {"batch": bench_sft.BATCH, "max_length": bench_sft.MAX_LEN,
                                                 "rows": args.rows, "steps": args.sft_steps},
                           "dpo": {"batch": bench_pref.BATCH, "max_length": bench_pref.MAX_LEN, "pairs": args.pairs,
                                   "steps": args.dpo_steps},
                           "memory": {"model": "base rung (init-model shape), vocab 4096", "steps": MEM_STEPS,
                                      "batch": bench_pref.BATCH, "MALLOC_MMAP_THRESHOLD_": 65536},
                           "warmup": args.warmup, "repeats": args.repeats, "threads": args.threads,
                           "cpus": os.cpu_count(), "load_average": os.getloadavg(), "torch": torch.__version__,
                           "transformers": transformers.__version__, "trl": trl.__version__,
                           "peft": peft.__version__},
              "results": med, "runs": runs, "ratios": ratios, "wall_s": time.time() - t0}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    m = med
    print("| what | baseline | flanmix | ratio (goal) |\n|---|---:|---:|---:|")
    print(f"| LoRA SFT, tiny, batch 8 | TRL SFTTrainer + PEFT: {m['sft_trl']['tokens_per_s']:,.0f} tok/s, "
          f"{m['sft_trl']['peak_rss_mb']:,.0f} MB | {m['sft_ours']['tokens_per_s']:,.0f} tok/s, "
          f"{m['sft_ours']['peak_rss_mb']:,.0f} MB | **{ratios['sft_tokens_per_s']:.2f}×** (≥ 2×) |")
    print(f"| LoRA DPO, tiny, batch 8 | TRL DPOTrainer + PEFT: {m['dpo_trl']['steps_per_s']:.2f} steps/s, "
          f"{m['dpo_trl']['peak_rss_mb']:,.0f} MB | {m['dpo_ours']['steps_per_s']:.2f} steps/s, "
          f"{m['dpo_ours']['peak_rss_mb']:,.0f} MB | **{ratios['dpo_steps_per_s']:.2f}×** (≥ 2×) |")
    print(f"| LoRA DPO, reference on every step | same | {m['dpo_ours_onthefly']['steps_per_s']:.2f} steps/s | "
          f"{ratios['dpo_onthefly_steps_per_s']:.2f}× |")
    for suffix, what in (("", ""), ("_ckpt", ", activation checkpointing")):
        full, lora = m[f"mem_full{suffix}"], m[f"mem_lora{suffix}"]
        print(f"| DPO memory, base rung ({full['params'] / 1e6:.1f}M){what} | full DPO: "
              f"{full['training_mb']:,.0f} MB training, {full['peak_rss_mb']:,.0f} MB peak RSS | "
              f"LoRA: {lora['training_mb']:,.0f} MB, {lora['peak_rss_mb']:,.0f} MB | "
              f"**{ratios[f'memory{suffix}_lora_over_full_training']:.2f}×** training memory "
              f"({ratios[f'memory{suffix}_lora_over_full_peak_rss']:.2f}× peak RSS) (≤ 0.6) |")
    print(f"\nwrote {out} ({time.time() - t0:.0f} s)")


if __name__ == "__main__":
    main()
