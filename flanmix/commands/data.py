"""`flanmix data mirror MIXTURE --to DIR`: download every hub (and repository) source a mixture reads into a hub
mirror, so the mixture builds where there is no network (`flanmix build ... --hub-mirror DIR`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from flanmix.commands.tasks import add_registry_option
from flanmix.core.errors import FlanmixError


def _checkouts(values: list[str]) -> dict[str, Path]:
    out: dict[str, Path] = {}
    for value in values:
        repo, sep, folder = value.partition("=")
        if not sep or repo.count("/") != 1 or not Path(folder).is_dir():
            raise FlanmixError(f"bad --checkout {value!r}", field="--checkout",
                               expected="OWNER/NAME=DIR with DIR an existing local clone")
        out[repo] = Path(folder)
    return out


def cmd_mirror(args: argparse.Namespace) -> int:
    from flanmix.catalog import mixture_tasks, remote_sources
    from flanmix.hub import mirror_sources
    from flanmix.registry import Registry

    checkouts = _checkouts(args.checkout)
    tasks = mixture_tasks(args.mixture, Registry.discover(args.registry))
    sources = [source for _, source in remote_sources(tasks)]
    if not sources:
        print(f"{args.mixture}: no hub or repo sources; nothing to mirror")
        return 0
    out = Path(args.to)
    out.mkdir(parents=True, exist_ok=True)
    note = None if args.quiet else (lambda line: print(line, file=sys.stderr, flush=True))
    counts = mirror_sources(sources, out, checkouts=checkouts, note=note)
    print(f"mirrored {counts['downloaded']} source(s), {counts['skipped']} already there, into {out}; build with "
          f"`flanmix build {args.mixture} --hub-mirror {out} --out DIR`")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("data", help="data sources: mirror a mixture's hub sources for offline builds")
    sub = p.add_subparsers(dest="data_command", metavar="SUBCOMMAND", required=True)
    m = sub.add_parser("mirror", help="download every hub/repo source a mixture reads into DIR",
                       description="Download every hub dataset (through `datasets`, as Parquet, revision recorded "
                                   "in _info.json) and repository file a mixture reads into DIR, in the layout "
                                   "`flanmix build --hub-mirror DIR` reads. Resumable: sources already there are "
                                   "skipped. Needs the network (or --checkout for repository sources).")
    m.add_argument("mixture", help="mixture file or bundled mixture name (e.g. flan2022)")
    m.add_argument("--to", required=True, metavar="DIR", help="the mirror folder (created; kept between runs)")
    m.add_argument("--checkout", action="append", default=[], metavar="OWNER/NAME=DIR",
                   help="copy a repository source's files from a local clone instead of GitHub (repeatable)")
    m.add_argument("--quiet", action="store_true", help="no progress lines")
    add_registry_option(m)
    m.set_defaults(func=cmd_mirror)
