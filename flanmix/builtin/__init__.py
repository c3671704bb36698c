"""Synthetic task generators shipped with flanmix.

A generator is `fn(rng: random.Random) -> dict` returning one raw row; task specs name it as
`source: {builtin: MODULE.FUNCTION}` (module relative to this package).
"""
