"""`flanmix studio`: the local web app (docs/studio.md) to browse tasks, edit templates with live previews, compose
mixtures and watch runs."""

from __future__ import annotations

import argparse
import socket
import sys
from pathlib import Path

from flanmix.commands.tasks import add_allow_path_option
from flanmix.core.errors import FlanmixError

LOOPBACK = "127.0.0.1"


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "studio", help="a local web app: tasks, template editor with live previews, mixtures, runs",
        description="Start a local web server (127.0.0.1 by default) with pages to browse the task registry, edit "
                    "templates with live previews, compose and build mixtures, and watch training runs. Write "
                    "actions need the token in the printed URL. Needs the studio extra: "
                    "pip install 'flanmix[studio]'.")
    p.add_argument("--registry", action="append", default=[], metavar="DIR",
                   help="extra task registry folder, read only (repeatable; also FLANMIX_REGISTRY)")
    p.add_argument("--writable", action="append", default=[], metavar="DIR",
                   help="a registry folder the template editor may save into (read too; repeatable); nothing "
                        "else is ever written except builds")
    p.add_argument("--mixtures", action="append", default=[], metavar="DIR",
                   help="a folder of mixture YAML files (repeatable; bundled mixtures and a registry's "
                        "mixtures/ folder are always listed)")
    p.add_argument("--runs", default="runs", metavar="DIR",
                   help="training runs and ablations to show; builds go to DIR/studio-builds/ (default: runs)")
    p.add_argument("--port", type=int, default=8765, help="port (default 8765; 0 picks a free one)")
    p.add_argument("--host", default=LOOPBACK,
                   help="address to listen on (default 127.0.0.1: this machine only); anything else exposes the "
                        "studio to the network and prints a warning")
    p.add_argument("--open", action="store_true", help="open the studio in a browser tab")
    add_allow_path_option(p)
    p.set_defaults(func=_run)


def _folders(values: list[str], flag: str) -> tuple[Path, ...]:
    folders = tuple(Path(v).expanduser() for v in values)
    for folder in folders:
        if not folder.is_dir():
            raise FlanmixError("folder not found", file=folder, field=flag, expected="an existing folder")
    return folders


def _run(args: argparse.Namespace) -> int:
    try:
        import uvicorn

        from flanmix.studio.app import create_app
        from flanmix.studio.config import StudioConfig
    except ModuleNotFoundError as err:
        raise FlanmixError(f"`flanmix studio` needs {err.name}, which is not installed",
                           expected="pip install 'flanmix[studio]'") from None
    folders = {"registry": _folders(args.registry, "--registry"), "writable": _folders(args.writable, "--writable"),
               "mixtures": _folders(args.mixtures, "--mixtures")}
    if not 0 <= args.port < 65536:
        raise FlanmixError(f"port {args.port} out of range", field="--port", expected="0..65535")
    sock = socket.socket(socket.AF_INET6 if ":" in args.host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((args.host, args.port))
    except OSError as err:
        sock.close()
        raise FlanmixError(f"cannot listen on {args.host}:{args.port}: {err.strerror or err}", field="--port",
                           expected="a free port (or --port 0)") from None
    port = sock.getsockname()[1]
    config = StudioConfig(**folders, runs=Path(args.runs).expanduser(), host=args.host, port=port)
    shown = f"[{args.host}]" if ":" in args.host else args.host
    url = f"http://{LOOPBACK if args.host in ('0.0.0.0', '::') else shown}:{port}/?token={config.token}"
    if args.host not in (LOOPBACK, "localhost", "::1"):
        print(f"flanmix studio: WARNING: listening on {args.host}: anyone who can reach this address can read "
              f"your tasks, mixtures and runs (writes still need the token)", file=sys.stderr)
    print(f"flanmix studio: {url}", flush=True)
    if args.open:
        _open_browser(url)
    server = uvicorn.Server(uvicorn.Config(create_app(config), log_level="warning", access_log=False))
    server.run(sockets=[sock])
    return 0


def _open_browser(url: str) -> None:
    """Open the studio in the user's browser when there is one (never fails the command)."""
    import webbrowser

    try:
        webbrowser.open(url, new=2)
    except Exception:  # noqa: BLE001 - no browser on a server is fine: the URL is printed
        pass
