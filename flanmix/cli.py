"""The `flanmix` command line.

Subcommands live in `flanmix/commands/*.py`; each module exposes `register(subparsers)`. User errors
(`FlanmixError`) print one line and exit with code 2; `--debug` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from collections.abc import Sequence

from flanmix import __version__
from flanmix.core.errors import FlanmixError

# Optional dependencies and the extra that installs each: a command that needs one tells the user how to get it.
_EXTRA_OF = {name: "train" for name in ("torch", "transformers", "accelerate", "tokenizers", "safetensors",
                                         "tensorboard")} | {"deepspeed": "deepspeed", "ray": "ray"}


def build_parser() -> argparse.ArgumentParser:
    """Build the top-level parser with every discovered subcommand."""
    parser = argparse.ArgumentParser(
        prog="flanmix",
        description="Build Flan-style instruction-tuning mixtures and train SFT -> RM -> PPO | RRHF | DPO.",
    )
    parser.add_argument("--version", action="version", version=f"flanmix {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    import flanmix.commands as commands_pkg

    for info in sorted(pkgutil.iter_modules(commands_pkg.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"flanmix.commands.{info.name}")
        register = getattr(module, "register", None)
        if register is not None:
            register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `flanmix` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 2
    try:
        result = func(args)
    except FlanmixError as err:
        if args.debug:
            raise
        print(f"flanmix: error: {err}", file=sys.stderr)
        return err.exit_code
    except ModuleNotFoundError as err:
        extra = _EXTRA_OF.get((err.name or "").split(".")[0])
        if extra is None or args.debug:
            raise
        print(f"flanmix: error: `flanmix {args.command}` needs {err.name}, which is not installed "
              f"(expected: pip install 'flanmix[{extra}]')", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("flanmix: interrupted", file=sys.stderr)
        return 130
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
