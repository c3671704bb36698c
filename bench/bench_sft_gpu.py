"""SFT throughput on one GPU: fp32 vs bf16 mixed precision, for init-model sizes, on the demo mixture.

    python bench/bench_sft_gpu.py --sizes small base --steps 60 --batch-size 16 --max-length 512

Builds the bundled demo mixture and randomly initialised models (nothing downloaded), trains each size for
`--steps` packed steps per precision with the one training loop, and reports the median tokens/s after warm-up
and the peak GPU memory. Writes bench/results/sft_gpu.json and prints a Markdown table. Not a test.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))


def measure(model_dir: Path, data_dir: Path, out_dir: Path, precision: str, args) -> dict:
    import torch

    from trainers.sft import train

    torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    result = train({"model": str(model_dir), "data": str(data_dir), "output_dir": str(out_dir),
                    "max_steps": args.steps, "batch_size": args.batch_size, "max_length": args.max_length,
                    "packing": True, "lr": 1e-3, "warmup_steps": 5, "log_every": 5, "mixed_precision": precision,
                    "progress": False, "tensorboard": False, "save_every": 0, "save_final": False, "resume": "never"})
    seconds = time.perf_counter() - start
    windows = [h for h in result.history if "tokens_per_s" in h]
    steady = windows[len(windows) // 3:] or windows  # skip warm-up windows (allocator, kernels' first calls)
    return {"precision": precision, "tokens_per_s": statistics.median(h["tokens_per_s"] for h in steady),
            "final_loss": windows[-1]["loss"], "seconds": round(seconds, 1),
            "peak_gpu_mb": round(torch.cuda.max_memory_allocated() / 2**20, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=["small", "base"])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--out", default=str(HERE / "results" / "sft_gpu.json"))
    args = parser.parse_args()

    import torch

    from flanmix.corpus import bundled_corpus
    from flanmix.mixture import build
    from trainers.init_model import init_model

    if not torch.cuda.is_available():
        raise SystemExit("no GPU: this benchmark measures GPU throughput")
    work = Path(tempfile.mkdtemp(prefix="flanmix-gpu-bench-"))
    build("demo", work / "mix", num_proc=1)
    texts = bundled_corpus(5000)
    rows = []
    for size in args.sizes:
        info = init_model(size, work / size, texts=texts)
        for precision in ("no", "bf16"):
            row = {"size": size, "params": info["params"],
                   **measure(work / size, work / "mix", work / f"run-{size}-{precision}", precision, args)}
            rows.append(row)
            print(json.dumps(row), flush=True)
    report = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__, "steps": args.steps,
              "batch_size": args.batch_size, "max_length": args.max_length, "rows": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=1))
    print(f"\n{report['device']}, batch {args.batch_size} × {args.max_length} packed tokens, {args.steps} steps\n")
    print("| size | params | precision | tokens/s | peak GPU MB | final loss |")
    print("|---|---:|---|---:|---:|---:|")
    for r in rows:
        print(f"| {r['size']} | {r['params'] / 1e6:.1f}M | {'fp32' if r['precision'] == 'no' else 'bf16'} | "
              f"{r['tokens_per_s']:,.0f} | {r['peak_gpu_mb']:,.0f} | {r['final_loss']:.3f} |")


if __name__ == "__main__":
    main()
