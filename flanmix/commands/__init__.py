"""CLI subcommands: each module here defines `register(subparsers)` and is discovered by `flanmix.cli`.

A module adds one or more subparsers and sets `func=<callable(args) -> int | None>` on each via `set_defaults`.
Heavy imports (torch, transformers, datasets) belong inside the functions, not at module level, so
`flanmix --help` stays fast.
"""
