"""LoRA benchmark, one run: flanmix LoRA SFT vs TRL SFTTrainer + PEFT (tokens/s), flanmix LoRA DPO vs TRL
DPOTrainer + PEFT (steps/s), and the peak memory of LoRA DPO vs full DPO on the `base` rung.

    python bench/bench_lora.py [--sft-steps 50] [--dpo-steps 20] [--repeats 2]      # about 12 minutes

Same adapter everywhere: LoRA r=16, alpha=32, no dropout, on every linear layer but the output head (PEFT's
"all-linear"), fp32, no activation checkpointing. SFT reuses `bench_sft.py`'s set-up (tiny Llama, bundled-task
prompt/completion rows, batch 8, max_length 128; TRL gets flanmix's exact token ids with a completion mask) and DPO
`bench_pref.py`'s (tiny Llama, verifiable pairs, batch 8); their helpers are imported, not copied. flanmix DPO runs
in its default mode (reference log-probs computed once from the adapter-disabled base) and, for an
apples-to-apples row, with `reference_mode: copy` (the adapter-disabled base on every step, as TRL does).

Memory: `init-model`'s `base` rung shape (26M parameters, the tiny run's tokenizer), DPO batch 8, a few steps,
reference precomputed, each configuration in its own process, without and with activation checkpointing (and, for
the allocated measure, with padded pairs instead of prompt-shared rows), in three measures (`--parts memory`
re-measures them alone and keeps the speed part of --out):

- allocated (the headline): the parameters' bytes plus the peak of PyTorch's CPU allocator during the run, read
  from the profiler's memory reporter. This is what `torch.cuda.max_memory_allocated` reports on a GPU and what
  LoRA's saving is about: full DPO's gradients and AdamW states for every weight against LoRA's for the adapter,
  and the activations, which both keep. It leaves out what is not the model's: the allocator's cached pages,
  library code and data, Python objects.
- RSS above imports: peak RSS (VmHWM: a child's own, not inherited like getrusage's ru_maxrss) minus the RSS
  once torch, transformers, accelerate and peft are imported (by both configurations) and the tokenizer and
  tokenized pairs exist. Closer to "what the process costs", but it also holds allocator and library overheads
  that do not scale with the model (glibc keeps large frees in its heap unless `MALLOC_MMAP_THRESHOLD_` is set,
  lazily loaded kernels and libraries).
- the previous measure ("rss_old"): the same, but with the baseline taken before the modules that loading and
  training import lazily (peft, parts of transformers and accelerate: 74 MB more for full DPO, 84 MB for LoRA);
  kept for comparison with the earlier results, which it no longer reproduces (0.61× then, 0.69× in this
  environment, also on the commit that wrote it: RSS baselines drift; the allocated figures came out the same in
  every run and on both commits).

A fourth figure comes with "rss": peak RSS above the RSS after a warm-up run of the same configuration on a `nano`
model (code pages, kernels and caches any run loads, about 130 MB). It agrees with "allocated" to a few percent.

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


def allocated_peak_mb(fn) -> float:
    """Peak bytes held by PyTorch's CPU allocator while `fn()` runs, above what was allocated before (MB): the
    profiler's memory reporter keeps the running total of the allocations made while it is on (a block allocated
    before is not counted when it is freed), the CPU counterpart of `torch.cuda.max_memory_allocated`."""
    from torch.profiler import ProfilerActivity, profile

    try:
        from torch._C._profiler import _EventType
    except ImportError:
        raise SystemExit("this torch has no profiler event tree (torch._C._profiler._EventType)") from None
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    peak, events = 0, list(prof.profiler.kineto_results.experimental_event_tree())
    while events:
        e = events.pop()
        if e.tag == _EventType.Allocation and e.extra_fields.device.type == "cpu":
            peak = max(peak, e.extra_fields.total_allocated)
        events.extend(e.children)
    return peak / 2**20


def tensor_mb(model) -> float:
    """Bytes of the model's parameters and buffers (shared storages once: tied embeddings), MB."""
    storages = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes()
                for t in [*model.parameters(), *model.buffers()]}
    return sum(storages.values()) / 2**20


def dpo_memory(work: Path, lora: bool, checkpointing: bool = False, measure: str = "rss",
               prefix_sharing: bool = True) -> dict:
    """Memory of a few DPO steps on the `base` rung, full or LoRA (same data, batch, precomputed reference), with or
    without activation checkpointing, in one of the measures of the module docstring: "allocated" (the tensors, as
    PyTorch's allocator sees them), "rss" (peak RSS above the RSS after the imports, and above the RSS after a
    warm-up run of the same configuration on a `nano` model) or "rss_old" (the previous measure). Without
    `prefix_sharing`, batches are padded pairs (the prompt once per response)."""
    if measure != "rss_old":
        import peft  # noqa: F401  (imported by both configurations before the baseline)
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

    def settings(name: str) -> LoopSettings:
        return LoopSettings(output_dir=str(work / name), batch_size=bench_pref.BATCH, max_steps=MEM_STEPS, lr=1e-4,
                            log_every=10_000, progress=False, tensorboard=False, save_final=False, resume="never",
                            schedule="constant", seed=0, gradient_checkpointing=checkpointing)

    def policy(model):
        return wrap(model, PeftSettings(**LORA), base_path=work / "base") if lora else model

    out = {"baseline_rss_mb": rss_mb()}
    if measure == "rss":  # the same run on a nano model: loads the code, kernels and caches any run needs
        import gc

        from transformers import LlamaForCausalLM

        from trainers.init_model import llama_config

        nano = LlamaForCausalLM(llama_config("nano", len(tok), pad_id=tok.pad_token_id, bos_id=tok.bos_token_id,
                                             eos_id=tok.eos_token_id))
        loop.train(DPOStage(policy(nano), tok, groups[:16], beta=0.1), settings("warm"))
        del nano
        gc.collect()
        out["warm_baseline_rss_mb"] = rss_mb()
    model = policy(load_policy(work / "base"))
    out.update(params=sum(p.numel() for p in model.parameters()),
               trainable=sum(p.numel() for p in model.parameters() if p.requires_grad), weights_mb=tensor_mb(model))

    def run() -> None:
        stage = DPOStage(model, tok, groups, beta=0.1, prefix_sharing=prefix_sharing)  # the reference pass too
        loop.train(stage, settings("mem"))

    t0 = time.perf_counter()
    if measure == "allocated":
        out["allocated_peak_mb"] = out["weights_mb"] + allocated_peak_mb(run)
    else:
        run()
        out.update(peak_rss_mb=peak_mb(), training_mb=peak_mb() - out["baseline_rss_mb"])
        if "warm_baseline_rss_mb" in out:
            out["warm_training_mb"] = peak_mb() - out["warm_baseline_rss_mb"]
    out["seconds"] = time.perf_counter() - t0
    return out


WORKERS = {
    "sft_ours": lambda w, a: sft_ours(w, a.sft_steps, a.warmup),
    "sft_trl": lambda w, a: sft_trl(w, a.sft_steps, a.warmup),
    "dpo_ours": lambda w, a: dpo_ours(w, a.dpo_steps, a.warmup),
    "dpo_ours_onthefly": lambda w, a: dpo_ours(w, a.dpo_steps, a.warmup, reference="copy"),
    "dpo_trl": lambda w, a: dpo_trl(w, a.dpo_steps, a.warmup),
    "prepare": lambda w, a: prepare(w, a.rows, a.pairs),
}
SPEED = [n for n in WORKERS if n != "prepare"]
MEASURES = ("allocated", "rss", "rss_old")


def memory_worker(measure: str, kind: str, checkpointing: bool):
    return lambda w, a: dpo_memory(w, lora=kind == "lora", checkpointing=checkpointing, measure=measure)


for _measure in MEASURES:
    for _ckpt in ("", "_ckpt"):
        for _kind in ("full", "lora"):
            WORKERS[f"mem_{_measure}_{_kind}{_ckpt}"] = memory_worker(_measure, _kind, bool(_ckpt))
for _kind in ("full", "lora"):  # padded pairs instead of prompt-shared rows: the log-probs' share of memory grows
    WORKERS[f"mem_allocated_{_kind}_padded"] = (lambda k: lambda w, a: dpo_memory(
        w, lora=k == "lora", measure="allocated", prefix_sharing=False))(_kind)
MEMORY = [n for n in WORKERS if n.startswith("mem_")]


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


def speed_ratios(m: dict) -> dict:
    return {"sft_tokens_per_s": m["sft_ours"]["tokens_per_s"] / m["sft_trl"]["tokens_per_s"],
            "dpo_steps_per_s": m["dpo_ours"]["steps_per_s"] / m["dpo_trl"]["steps_per_s"],
            "dpo_onthefly_steps_per_s": m["dpo_ours_onthefly"]["steps_per_s"] / m["dpo_trl"]["steps_per_s"]}


def memory_ratios(m: dict) -> dict:
    """LoRA over full, per measure, without and with activation checkpointing."""
    out = {}
    for ck in ("", "_ckpt"):
        pre = "memory" + ck
        out[f"{pre}_lora_over_full_allocated"] = (m[f"mem_allocated_lora{ck}"]["allocated_peak_mb"]
                                                  / m[f"mem_allocated_full{ck}"]["allocated_peak_mb"])
        for measure, key in (("rss", "training_mb"), ("rss", "warm_training_mb"), ("rss_old", "training_mb")):
            name = f"{pre}_lora_over_full_{measure}_{key.removesuffix('_mb')}"
            out[name] = m[f"mem_{measure}_lora{ck}"][key] / m[f"mem_{measure}_full{ck}"][key]
        out[f"{pre}_lora_over_full_peak_rss"] = m[f"mem_rss_lora{ck}"]["peak_rss_mb"] / m[f"mem_rss_full{ck}"][
            "peak_rss_mb"]
    out["memory_padded_lora_over_full_allocated"] = (m["mem_allocated_lora_padded"]["allocated_peak_mb"]
                                                     / m["mem_allocated_full_padded"]["allocated_peak_mb"])
    return out


def print_table(m: dict, ratios: dict) -> None:
    """The README's rows."""
    print("| what | baseline | flanmix | ratio (goal) |\n|---|---:|---:|---:|")
    print(f"| LoRA SFT, tiny, batch 8 | TRL SFTTrainer + PEFT: {m['sft_trl']['tokens_per_s']:,.0f} tok/s, "
          f"{m['sft_trl']['peak_rss_mb']:,.0f} MB | {m['sft_ours']['tokens_per_s']:,.0f} tok/s, "
          f"{m['sft_ours']['peak_rss_mb']:,.0f} MB | **{ratios['sft_tokens_per_s']:.2f}×** (≥ 2×) |")
    print(f"| LoRA DPO, tiny, batch 8 | TRL DPOTrainer + PEFT: {m['dpo_trl']['steps_per_s']:.2f} steps/s, "
          f"{m['dpo_trl']['peak_rss_mb']:,.0f} MB | {m['dpo_ours']['steps_per_s']:.2f} steps/s, "
          f"{m['dpo_ours']['peak_rss_mb']:,.0f} MB | **{ratios['dpo_steps_per_s']:.2f}×** (≥ 2×) |")
    print(f"| LoRA DPO, reference on every step | same | {m['dpo_ours_onthefly']['steps_per_s']:.2f} steps/s | "
          f"{ratios['dpo_onthefly_steps_per_s']:.2f}× |")
    for ck, what in (("", ""), ("_ckpt", ", activation checkpointing")):
        full, lora = m[f"mem_allocated_full{ck}"], m[f"mem_allocated_lora{ck}"]
        rf, rl = m[f"mem_rss_full{ck}"], m[f"mem_rss_lora{ck}"]
        r = {k.split("_over_full_")[1]: v for k, v in ratios.items() if k.startswith(f"memory{ck}_lora_over_full")}
        print(f"| DPO peak memory, base rung ({full['params'] / 1e6:.1f}M){what} | full DPO: "
              f"{full['allocated_peak_mb']:,.0f} MB allocated ({rf['warm_training_mb']:,.0f} MB RSS above a warm "
              f"process) | LoRA: {lora['allocated_peak_mb']:,.0f} MB ({rl['warm_training_mb']:,.0f} MB) | "
              f"**{r['allocated']:.2f}×** allocated ({r['rss_warm_training']:.2f}× RSS above a warm process, "
              f"{r['rss_training']:.2f}× above the imports, {r['rss_old_training']:.2f}× previous measure) (≤ 0.6) |")
    full, lora = m["mem_allocated_full_padded"], m["mem_allocated_lora_padded"]
    print(f"| the same, padded pairs (no prompt sharing) | full DPO: {full['allocated_peak_mb']:,.0f} MB allocated | "
          f"LoRA: {lora['allocated_peak_mb']:,.0f} MB | **{ratios['memory_padded_lora_over_full_allocated']:.2f}×** |")


def run_all(names: list[str], args) -> dict[str, list[dict]]:
    """Every named worker in its own process (speed ones `args.repeats` times, memory ones once)."""
    with tempfile.TemporaryDirectory(prefix="bench_lora_") as tmp:
        work = Path(tmp)
        run("prepare", work, args)  # in its own process too: this one stays small (see peak_mb)
        runs: dict[str, list[dict]] = {name: [] for name in names}
        for rep in range(args.repeats):
            for name in names:  # baseline and flanmix back to back, every repeat; memory (deterministic) once
                if rep == 0 or not name.startswith("mem"):
                    runs[name].append(run(name, work, args))
    return runs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sft-steps", type=int, default=50)
    ap.add_argument("--dpo-steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=2, help="runs of each speed configuration (medians)")
    ap.add_argument("--rows", type=int, default=2000)
    ap.add_argument("--pairs", type=int, default=128)
    ap.add_argument("--threads", type=int, default=1, help="OMP/torch threads per run, the same for all")
    ap.add_argument("--parts", nargs="+", choices=("speed", "memory"), default=["speed", "memory"],
                    help="what to measure; the other part is kept from --out")
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
    out = Path(args.out)
    names = (SPEED if "speed" in args.parts else []) + (MEMORY if "memory" in args.parts else [])
    runs = run_all(names, args)
    med = {name: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for name, rs in runs.items()}
    import peft
    import torch
    import transformers
    import trl

    env = {"threads": args.threads, "cpus": os.cpu_count(), "load_average": os.getloadavg(),
           "torch": torch.__version__, "transformers": transformers.__version__, "trl": trl.__version__,
           "peft": peft.__version__}
    result = json.loads(out.read_text()) if out.is_file() and set(args.parts) != {"speed", "memory"} else {}
    result.setdefault("settings", {})["lora"] = LORA
    for part, keep in (("speed", SPEED), ("memory", MEMORY)):
        if part not in args.parts:  # kept from the previous run: its entries only
            for key in ("results", "runs"):
                result[key] = {k: v for k, v in result.get(key, {}).items() if k in keep}
    result.setdefault("results", {}).update(med)
    result.setdefault("runs", {}).update(runs)
    if "speed" in args.parts:
        result["settings"].update(sft={"batch": bench_sft.BATCH, "max_length": bench_sft.MAX_LEN, "rows": args.rows,
                                       "steps": args.sft_steps},
                                  dpo={"batch": bench_pref.BATCH, "max_length": bench_pref.MAX_LEN,
                                       "pairs": args.pairs, "steps": args.dpo_steps},
                                  warmup=args.warmup, repeats=args.repeats, **env)
    if "memory" in args.parts:
        result["settings"]["memory"] = {"model": "base rung (init-model shape), vocab 4096", "steps": MEM_STEPS,
                                        "batch": bench_pref.BATCH, "MALLOC_MMAP_THRESHOLD_": 65536, **env}
    m = result["results"]
    result["ratios"] = {**speed_ratios(m), **memory_ratios(m)}
    result["wall_s"] = time.time() - t0
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    print_table(m, result["ratios"])
    print(f"\nwrote {out} ({time.time() - t0:.0f} s)")


if __name__ == "__main__":
    main()
