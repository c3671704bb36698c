"""T5 SFT throughput and memory: flanmix's loop vs transformers' `Seq2SeqTrainer` on the same model, data and batch.

    python bench/bench_t5.py [--size tiny] [--steps 60] [--warmup 8] [--repeats 2] [--threads 1]

Model: `init-model --arch t5 --size tiny` (T5 v1.1-style encoder-decoder with a Unigram tokenizer trained on
rendered rows of the bundled tasks). Data: inputs/targets rows rendered from the bundled tasks (Flan-style),
max_length 128 per side, batch 8, fp32, AdamW lr 1e-3 betas (0.9, 0.999), no weight decay, linear decay, grad
clip 1.0.

Both sides train on the exact same token ids (the rows are tokenized once by `trainers.seq2seq.tokenize_rows`; the
trainer gets them pre-tokenized with `DataCollatorForSeq2Seq`), and the first batch's loss is computed by both to
show they optimise the same objective. Every configuration runs in its own subprocess (peak RSS is that run's
alone), in alternating order, `repeats` times; medians are reported. tokens/s counts the real encoder + decoder
tokens (no padding) of the timed steps (after `warmup`) over their wall time. flanmix runs with its SFT defaults
(length-grouped batches) and without grouping; the trainer with its defaults (no grouping) and with
`train_sampling_strategy="group_by_length"`.

Writes bench/results/t5.json and prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_sft  # noqa: E402  (the rows, rates, child runs and report shared with the SFT bench)

REPO = Path(__file__).resolve().parent.parent
for _key in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):  # offline, as everywhere in flanmix
    os.environ.setdefault(_key, "1")
BATCH, MAX_LEN, LR = 8, 128, 1e-3


def render_rows(n: int, seed: int = 0) -> list[dict]:
    """inputs/targets rows from the bundled tasks that have local rows (`bench_sft.render_rows`)."""
    return bench_sft.render_rows(n, seed, keep=_local_rows,
                                 make_row=lambda inputs, targets: {"inputs": inputs, "targets": targets})


def _local_rows(task) -> bool:
    """True for a task with training rows on this machine (hub-backed tasks need a network or a cache)."""
    from flanmix.core.errors import FlanmixError

    try:
        return bool(task.examples("train"))
    except FlanmixError:
        return False


def prepare(work: Path, n_rows: int, size: str) -> None:
    from trainers import seq2seq
    from trainers.init_model import init_model
    from trainers.models import load_tokenizer

    rows = render_rows(n_rows)
    (work / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    # the tokenizer's corpus: rendered rows of the bundled tasks that have local data (hub-backed tasks are skipped)
    texts = [t for r in render_rows(20000, seed=1) for t in (r["inputs"], r["targets"])]
    info = init_model(size, work / "model", arch="t5", vocab_size=4096, texts=texts, seed=0, overwrite=True)
    examples, stats = seq2seq.tokenize_rows(load_tokenizer(work / "model"), rows, max_length=MAX_LEN)
    (work / "tokenized.jsonl").write_text("".join(json.dumps(e) + "\n" for e in examples))
    meta = {"params": info["params"], "vocab": info["vocab_size"], "rows": len(examples), **stats.as_dict()}
    (work / "meta.json").write_text(json.dumps(meta))


def child_flanmix(work: Path, steps: int, warmup: int, group: bool) -> dict:
    from trainers.loop import train
    from trainers.sft import SFTConfig, SFTStage

    out = Path(tempfile.mkdtemp(prefix="bench-t5-flanmix-"))
    cfg = SFTConfig(model=str(work / "model"), data=str(work / "rows.jsonl"), output_dir=str(out),
                    batch_size=BATCH, max_length=MAX_LEN, max_steps=warmup + steps, lr=LR, betas=(0.9, 0.999),
                    weight_decay=0.0, schedule="linear", min_lr_ratio=0.0, max_grad_norm=1.0, mixed_precision="no",
                    log_every=1, progress=False, tensorboard=False, save_final=False, resume="never", seed=0,
                    group_by_length=group)
    return bench_sft.loop_rates(train(SFTStage(cfg, verbose=False), cfg).history, warmup)


def _hf_trainer(work: Path, max_steps: int, group: bool, out: Path):
    import torch
    from datasets import Dataset
    from transformers import (
        AutoModelForSeq2SeqLM,
        AutoTokenizer,
        DataCollatorForSeq2Seq,
        Seq2SeqTrainer,
        Seq2SeqTrainingArguments,
    )

    tok = AutoTokenizer.from_pretrained(work / "model")
    model = AutoModelForSeq2SeqLM.from_pretrained(work / "model", dtype=torch.float32)
    ds = Dataset.from_list([json.loads(x) for x in (work / "tokenized.jsonl").read_text().splitlines()])
    args = Seq2SeqTrainingArguments(
        output_dir=str(out), per_device_train_batch_size=BATCH, use_cpu=True, max_steps=max_steps,
        logging_steps=10_000, save_strategy="no", report_to=[], learning_rate=LR, lr_scheduler_type="linear",
        weight_decay=0.0, max_grad_norm=1.0, adam_beta1=0.9, adam_beta2=0.999, dataloader_num_workers=0, seed=0,
        disable_tqdm=True, bf16=False, train_sampling_strategy="group_by_length" if group else "random")
    collator = DataCollatorForSeq2Seq(tok, model=model, label_pad_token_id=-100)
    return Seq2SeqTrainer(model=model, args=args, train_dataset=ds, data_collator=collator, processing_class=tok)


def child_hf(work: Path, steps: int, warmup: int, group: bool) -> dict:
    out = Path(tempfile.mkdtemp(prefix="bench-t5-hf-"))
    trainer = _hf_trainer(work, warmup + steps, group, out)
    # the same timing as the TRL baselines
    return bench_sft.trainer_rates(*bench_sft.time_trainer(
        trainer, lambda b: int(b["attention_mask"].sum()) + int((b["labels"] != -100).sum()), warmup))


def child_first_loss(work: Path) -> dict:
    """Loss of the same first batch (first 8 rows) by flanmix's stage and by the trainer's compute_loss."""
    import torch

    from trainers.sft import SFTConfig, SFTStage

    out = Path(tempfile.mkdtemp(prefix="bench-t5-first-"))
    trainer = _hf_trainer(work, 1, False, out)
    model = trainer.model.eval()
    cfg = SFTConfig(model=str(work / "model"), data=str(work / "rows.jsonl"), output_dir=str(out),
                    max_length=MAX_LEN)
    stage = SFTStage(cfg, model=model, tokenizer=trainer.processing_class, verbose=False)
    rows = [trainer.train_dataset[i] for i in range(BATCH)]
    same = all(list(r["input_ids"]) == e["input_ids"] and list(r["labels"]) == e["labels"]
               for r, e in zip(rows, stage.items[:BATCH]))
    with torch.no_grad():
        ours, _ = stage.loss(model, stage.collate(stage.items[:BATCH]))
        theirs = trainer.compute_loss(model, trainer.data_collator(rows))
    return {"flanmix": float(ours), "hf": float(theirs), "same_ids": same, "abs_diff": abs(float(ours) - float(theirs))}


CONFIGS = {"flanmix": ("flanmix", True), "flanmix_ungrouped": ("flanmix", False),
           "hf_seq2seq_trainer": ("hf", False), "hf_seq2seq_trainer_grouped": ("hf", True)}


def child(args) -> dict:
    import torch

    torch.manual_seed(0)
    work = Path(args.work)
    if args.child == "first_loss":
        return child_first_loss(work)
    kind, group = CONFIGS[args.child]
    if kind == "flanmix":
        return child_flanmix(work, args.steps, args.warmup, group)
    return child_hf(work, args.steps, args.warmup, group)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="tiny", help="T5 ladder rung (default tiny)")
    ap.add_argument("--steps", type=int, default=60, help="timed optimizer steps per run")
    ap.add_argument("--warmup", type=int, default=8, help="untimed steps at the start of each run")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--rows", type=int, default=4000)
    ap.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS for every run (0: torch default)")
    ap.add_argument("--configs", default=",".join(CONFIGS))
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "t5.json"))
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--work", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print("RESULT " + json.dumps(child(args)), flush=True)
        return

    sys.path.insert(0, str(REPO))
    work = Path(tempfile.mkdtemp(prefix="bench-t5-"))
    t0 = time.time()
    prepare(work, args.rows, args.size)
    meta = json.loads((work / "meta.json").read_text())
    configs = args.configs.split(",")
    runs = bench_sft.alternate(configs, args.repeats, lambda c: bench_sft.run_child(c, work, args, __file__))
    first = bench_sft.run_child("first_loss", work, args, __file__)
    summary, ratios = bench_sft.summarize(runs, (("flanmix", "hf_seq2seq_trainer"),
                                                 ("flanmix", "hf_seq2seq_trainer_grouped"),
                                                 ("flanmix_ungrouped", "hf_seq2seq_trainer")))
    import torch
    import transformers

    result = {
        "setup": {"model": f"init-model --arch t5 --size {args.size}", **meta, "batch_size": BATCH,
                  "max_length": MAX_LEN, "dtype": "fp32", "steps": args.steps, "warmup": args.warmup,
                  "repeats": args.repeats, "threads": args.threads or torch.get_num_threads(),
                  "torch": torch.__version__, "transformers": transformers.__version__, "cpus": os.cpu_count()},
        "results": summary, "ratios": ratios, "first_batch_loss": first, "wall_s": time.time() - t0,
    }
    bench_sft.report(result, Path(args.out), f"T5 SFT bench: {meta['params']:,}-param T5 ({args.size}), vocab "
                     f"{meta['vocab']}, batch {BATCH}, max_length {MAX_LEN}, fp32, {args.steps} timed steps x "
                     f"{args.repeats} runs (medians)")
    print(f"- first batch loss: flanmix {first['flanmix']:.6f}, Seq2SeqTrainer {first['hf']:.6f} "
          f"(|diff| {first['abs_diff']:.2e}, same ids: {first['same_ids']})")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
