"""The `flanmix` command line.

Subcommands live in `flanmix/commands/*.py`; each module exposes `register(subparsers)`. User errors
(`FlanmixError`) print one line and exit with code 2; `--debug` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import os
import pkgutil
import sys
from collections.abc import Sequence

from flanmix import __version__
from flanmix.core.errors import FlanmixError
from flanmix.core.paths import allowing

# Optional dependencies and the extra that installs each: a command that needs one tells the user how to get it.
_EXTRA_OF = {name: "train" for name in ("torch", "transformers", "accelerate", "tokenizers", "safetensors",
                                         "tensorboard")} | {"deepspeed": "deepspeed", "ray": "ray"}
# OS errors that say something about the machine, not about flanmix: one line, exit 2, like a FlanmixError.
_ENVIRONMENT_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG}


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line (exit 2), like every other flanmix error; subcommand parsers
    are of the same class."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """Build the top-level parser with every discovered subcommand."""
    parser = _Parser(
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
        with allowing(getattr(args, "allow_path", None) or ()):
            result = func(args)
        sys.stdout.flush()  # here, so a closed pipe is noticed inside the try rather than at interpreter exit
    except BrokenPipeError:
        # `flanmix render ... | head -1`: the reader has gone; stop quietly, like a command killed by SIGPIPE.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + 13
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
    except OSError as err:
        if args.debug or err.errno not in _ENVIRONMENT_ERRNOS:
            raise
        where = f"{err.filename}: " if err.filename else ""
        print(f"flanmix: error: {where}{err.strerror or err}", file=sys.stderr)
        return 2
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
