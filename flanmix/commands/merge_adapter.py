"""`flanmix merge-adapter`: turn a LoRA run's adapter folder into a full model folder that plain transformers loads.

    flanmix merge-adapter runs/sft-lora/final --out runs/sft-merged [--base runs/tiny] [--overwrite]
"""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "merge-adapter",
        help="merge a LoRA adapter (a run's final/ with a peft: block) into its base model",
        description="Load the base model named in ADAPTER_DIR/adapter_config.json (or --base), merge the LoRA "
                    "weights into it and save a full transformers folder (weights, config, tokenizer) to --out. "
                    "A PPO run's critic/ adapter is merged into OUT/critic.",
    )
    p.add_argument("adapter_dir", metavar="ADAPTER_DIR", help="folder with adapter_config.json")
    p.add_argument("--out", required=True, help="output folder for the merged model")
    p.add_argument("--base", help="base model folder (default: the one recorded in the adapter's config)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from trainers.adapters import merge_adapter  # torch, transformers and peft: only when the command runs

    written = merge_adapter(args.adapter_dir, args.out, base=args.base, overwrite=args.overwrite)
    print(f"merged {args.adapter_dir} into {', '.join(str(p) for p in written)}")
    return 0
