"""`flanmix init-model`: a fresh random model of a known architecture (Llama by default; Qwen2, Mistral, GPT-2,
GPT-NeoX, Gemma, T5) + a tokenizer trained locally (byte-level BPE; SentencePiece-style Unigram for T5)."""

from __future__ import annotations

import argparse

from flanmix.core.errors import FlanmixError


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "init-model",
        help="create a randomly initialised model and tokenizer (no download)",
        description="Train a tokenizer on local text and save a random model of the chosen architecture "
                    "(safetensors) next to it: a Llama-style causal LM by default, or --arch qwen2|mistral|gpt2|"
                    "gpt_neox|gemma|t5 with that family's tokenizer quirks. Use --list-sizes to see the size ladder.",
    )
    p.add_argument("--arch", default="llama", metavar="ARCH",
                   help="llama | qwen2 | mistral | gpt2 | gpt_neox | gemma | t5 (default: llama)")
    p.add_argument("--size", default="tiny", help="named size (see --list-sizes); default: tiny")
    p.add_argument("--out", help="output folder")
    p.add_argument("--vocab-size", type=int, default=4096, help="BPE vocabulary size (default 4096)")
    p.add_argument("--corpus", help="text/JSONL/Parquet file to train the tokenizer on (default: bundled task text)")
    p.add_argument("--extra-ids", type=int, default=0, help="t5: number of <extra_id_N> sentinel tokens (default 0)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    p.add_argument("--list-sizes", action="store_true", help="print the size ladder with parameter counts")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from trainers.archs import check_arch
    from trainers.init_model import format_params, init_model, list_sizes, read_corpus  # torch: only when run

    check_arch(args.arch)
    if args.list_sizes:
        print(f"{'size':<8} {'hidden':>6} {'layers':>6} {'heads':>5} {'ffn':>5} {'params':>9}  "
              f"({args.arch}, vocab {args.vocab_size})")
        for r in list_sizes(args.vocab_size, args.arch):
            print(f"{r['name']:<8} {r['hidden']:>6} {r['layers']:>6} {r['heads']:>5} {r['intermediate']:>5} "
                  f"{format_params(r['params']):>9}")
        return 0
    if not args.out:
        raise FlanmixError("--out is required", field="out")
    texts = read_corpus(args.corpus) if args.corpus else None
    info = init_model(args.size, args.out, vocab_size=args.vocab_size, texts=texts, seed=args.seed,
                      overwrite=args.overwrite, arch=args.arch, extra_ids=args.extra_ids)
    print(f"{info['path']}: {info['size']} {info['arch']} model, {info['params']:,} params "
          f"({format_params(info['params'])}), vocab {info['vocab_size']}")
    return 0
