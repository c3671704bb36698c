"""QLoRA on one GPU: LoRA SFT and LoRA DPO with a 4-bit (bitsandbytes NF4) base vs a bf16-mixed-precision LoRA run
on the same model, data and adapter. A short check for a session that has a GPU lent (about a minute on one).

    python bench/bench_qlora_gpu.py [--size base] [--sft-steps 40] [--dpo-steps 20]

Builds a random `init-model` rung (the `base` rung by default: 26M parameters, a local tokenizer trained on the
bundled corpus, nothing downloaded), renders prompt/completion rows and preference pairs from the bundled tasks,
then runs through flanmix's own trainers (`trainers.sft`, `trainers.dpo`, the one training loop), for
`peft.qlora` false and true (r=16, alpha=32, every linear layer, bf16 compute):

- SFT: the loss falls (mean of the last 5 steps below the first step's loss);
- DPO: the step-0 loss is ln 2 (the zero-initialised adapter makes the policy equal its adapter-disabled reference;
  bf16 compute, so to 1e-2) and the last step's loss is below it;
- QLoRA actually has 4-bit weights (bitsandbytes `Linear4bit` layers);
- peak `torch.cuda.max_memory_allocated` of each run (weights, reference pass, adapter, optimizer, activations).

LoRA keeps the base in fp32 under bf16 autocast (flanmix's LoRA), QLoRA stores it in NF4: on a model this small
activations are a large share, so the saving is the weights' part. Writes $OUT/qlora_gpu.json when $OUT is set,
else bench/results/qlora_gpu.json; exits 1 if a check fails. Refuses in one line without CUDA or bitsandbytes.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]

LORA = {"r": 16, "alpha": 32, "dropout": 0.0, "target_modules": "all-linear"}
BATCH, MAX_LEN = 8, 128


def refuse_without_gpu() -> None:
    """One line and exit status 1 where QLoRA cannot run."""
    import torch

    if not torch.cuda.is_available():
        raise SystemExit("bench_qlora_gpu: needs a CUDA GPU (bitsandbytes 4-bit weights); none is available here")
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise SystemExit("bench_qlora_gpu: needs the bitsandbytes package (pip install bitsandbytes)") from None


def prepare(work: Path, size: str, rows: int, pairs: int) -> None:
    """The model rung, SFT rows and preference pairs, all local."""
    from bench_sft import render_rows

    from flanmix.corpus import bundled_corpus
    from flanmix.preferences import rows_from_tasks, write_rows
    from trainers.init_model import init_model

    init_model(size, work / "model", vocab_size=4096, texts=bundled_corpus(max_rows=5000, seed=0), seed=0)
    sft_rows = render_rows(rows)
    (work / "sft.jsonl").write_text("".join(json.dumps(r) + "\n" for r in sft_rows))
    prefs = rows_from_tasks(["cluster:strings", "cluster:lists"], n=max(1, pairs // 13 + 1), seed=0,
                            edits="chars")[:pairs]
    write_rows(prefs, work / "prefs.jsonl")


def four_bit_layers(model) -> int:
    """bitsandbytes 4-bit linear layers in the model (0 for a plain LoRA run)."""
    return sum(type(m).__name__ == "Linear4bit" for m in model.modules())


def measured(fn):
    """(fn's result, peak GPU memory allocated during it in MB, seconds)."""
    import torch

    gc.collect()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    result = fn()
    torch.cuda.synchronize()
    return result, torch.cuda.max_memory_allocated() / 2**20, time.perf_counter() - t0


def run_sft(work: Path, qlora: bool, steps: int) -> dict:
    from trainers.loop import train
    from trainers.sft import SFTConfig, SFTStage

    cfg = SFTConfig(model=str(work / "model"), data=str(work / "sft.jsonl"), output_dir=str(work / f"sft_{qlora}"),
                    batch_size=BATCH, max_length=MAX_LEN, max_steps=steps, lr=1e-3, mixed_precision="bf16",
                    log_every=1, progress=False, tensorboard=False, save_final=False, resume="never", seed=0,
                    peft={**LORA, "qlora": qlora})

    def go():
        stage = SFTStage(cfg, verbose=False)
        return stage, train(stage, cfg)

    (stage, res), peak, secs = measured(go)
    losses = [h["loss"] for h in res.history if "loss" in h]
    out = {"peak_gpu_mb": peak, "seconds": secs, "loss_first": losses[0], "loss_last5": sum(losses[-5:]) / 5,
           "four_bit_layers": four_bit_layers(stage.model)}
    out["loss_falls"] = out["loss_last5"] < out["loss_first"]
    return out


def run_dpo(work: Path, qlora: bool, steps: int) -> dict:
    from trainers import loop
    from trainers.dpo import DPOConfig, build_stage

    cfg = DPOConfig(model=str(work / "model"), data=str(work / "prefs.jsonl"), output_dir=str(work / f"dpo_{qlora}"),
                    eval_fraction=0.0, max_length=MAX_LEN, batch_size=BATCH, max_steps=steps, lr=5e-4, beta=0.1,
                    mixed_precision="bf16", log_every=1, progress=False, tensorboard=False, save_final=False,
                    resume="never", seed=0, peft={**LORA, "qlora": qlora})

    def go():
        stage = build_stage(cfg)  # the reference log-probs (adapter off) are computed here
        return stage, loop.train(stage, cfg)

    (stage, res), peak, secs = measured(go)
    losses = [h["loss"] for h in res.history if "loss" in h]
    out = {"peak_gpu_mb": peak, "seconds": secs, "loss_step0": losses[0], "loss_last": losses[-1],
           "four_bit_layers": four_bit_layers(stage.model)}
    out["step0_is_ln2"] = abs(losses[0] - math.log(2)) < 1e-2
    out["loss_falls"] = losses[-1] < losses[0]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="base", help="init-model rung (nano, tiny, small, base, medium, large)")
    ap.add_argument("--sft-steps", type=int, default=40)
    ap.add_argument("--dpo-steps", type=int, default=20)
    ap.add_argument("--rows", type=int, default=1000)
    ap.add_argument("--pairs", type=int, default=128)
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # everything is built here; nothing may come from a hub
    refuse_without_gpu()
    import torch

    t0 = time.time()
    runs: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="bench_qlora_") as tmp:
        work = Path(tmp)
        prepare(work, args.size, args.rows, args.pairs)
        for qlora in (False, True):
            name = "qlora" if qlora else "lora_bf16"
            runs[f"sft_{name}"] = run_sft(work, qlora, args.sft_steps)
            runs[f"dpo_{name}"] = run_dpo(work, qlora, args.dpo_steps)
            print(f"  {name}: sft {runs[f'sft_{name}']}\n  {name}: dpo {runs[f'dpo_{name}']}", file=sys.stderr)
    checks = {"sft_loss_falls": all(runs[f"sft_{n}"]["loss_falls"] for n in ("lora_bf16", "qlora")),
              "dpo_step0_ln2": all(runs[f"dpo_{n}"]["step0_is_ln2"] for n in ("lora_bf16", "qlora")),
              "dpo_loss_falls": all(runs[f"dpo_{n}"]["loss_falls"] for n in ("lora_bf16", "qlora")),
              "qlora_is_4bit": runs["sft_qlora"]["four_bit_layers"] > 0 and runs["dpo_qlora"]["four_bit_layers"] > 0,
              "lora_is_not_4bit": runs["sft_lora_bf16"]["four_bit_layers"] == 0}
    ratios = {s: runs[f"{s}_qlora"]["peak_gpu_mb"] / runs[f"{s}_lora_bf16"]["peak_gpu_mb"] for s in ("sft", "dpo")}
    import bitsandbytes
    import peft

    result = {"settings": {"size": args.size, "lora": LORA, "batch": BATCH, "max_length": MAX_LEN,
                           "sft_steps": args.sft_steps, "dpo_steps": args.dpo_steps,
                           "gpu": torch.cuda.get_device_name(), "torch": torch.__version__, "peft": peft.__version__,
                           "bitsandbytes": bitsandbytes.__version__},
              "runs": runs, "qlora_over_lora_peak_memory": ratios, "checks": checks, "wall_s": time.time() - t0}
    out = Path(os.environ["OUT"]) / "qlora_gpu.json" if os.environ.get("OUT") else HERE / "results" / "qlora_gpu.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    for s in ("sft", "dpo"):
        lo, q = runs[f"{s}_lora_bf16"], runs[f"{s}_qlora"]
        print(f"| {s.upper()}, {args.size} rung, batch {BATCH} | LoRA bf16: {lo['peak_gpu_mb']:,.0f} MB | "
              f"QLoRA: {q['peak_gpu_mb']:,.0f} MB | {ratios[s]:.2f}× |")
    print(f"checks: {checks}\nwrote {out} ({time.time() - t0:.0f} s)")
    if not all(checks.values()):
        raise SystemExit(f"bench_qlora_gpu: failed checks: {[k for k, v in checks.items() if not v]}")


if __name__ == "__main__":
    main()
