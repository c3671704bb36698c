"""`flanmix init-model`: a fresh random Llama-style model + locally trained byte-level BPE tokenizer."""

from __future__ import annotations

import argparse

from flanmix.core.errors import FlanmixError


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "init-model",
        help="create a randomly initialised Llama-style model and tokenizer (no download)",
        description="Train a byte-level BPE tokenizer on local text and save a random Llama-style causal LM "
                    "(safetensors) next to it. Use --list-sizes to see the size ladder.",
    )
    p.add_argument("--size", default="tiny", help="named size (see --list-sizes); default: tiny")
    p.add_argument("--out", help="output folder")
    p.add_argument("--vocab-size", type=int, default=4096, help="BPE vocabulary size (default 4096)")
    p.add_argument("--corpus", help="text/JSONL/Parquet file to train the tokenizer on (default: bundled task text)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    p.add_argument("--list-sizes", action="store_true", help="print the size ladder with parameter counts")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from trainers.init_model import format_params, init_model, list_sizes, read_corpus  # torch: only when run

    if args.list_sizes:
        print(f"{'size':<8} {'hidden':>6} {'layers':>6} {'heads':>5} {'ffn':>5} {'params':>9}  "
              f"(vocab {args.vocab_size})")
        for r in list_sizes(args.vocab_size):
            print(f"{r['name']:<8} {r['hidden']:>6} {r['layers']:>6} {r['heads']:>5} {r['intermediate']:>5} "
                  f"{format_params(r['params']):>9}")
        return 0
    if not args.out:
        raise FlanmixError("--out is required", field="out")
    texts = read_corpus(args.corpus) if args.corpus else None
    info = init_model(args.size, args.out, vocab_size=args.vocab_size, texts=texts, seed=args.seed,
                      overwrite=args.overwrite)
    print(f"{info['path']}: {info['size']} model, {info['params']:,} params "
          f"({format_params(info['params'])}), vocab {info['vocab_size']}")
    return 0
