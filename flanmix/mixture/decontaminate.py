"""The evaluation n-grams a mixture's `decontaminate` names: every process that renders computes them itself.

The n-gram hashes (`flanmix.dedup.ngram_hashes`) are Python string hashes, which differ between processes that are
not forked from one another (hash randomization). Forked `--num-proc` workers inherit the build's set; a Ray worker
computes its own from the same inputs, so the set always matches the hashes that process computes for its rows.
"""

from __future__ import annotations

from pathlib import Path

from flanmix.core.errors import FlanmixError
from flanmix.core.yamlio import YamlDoc
from flanmix.dedup import build_ngram_set, eval_texts_from_files
from flanmix.mixture.spec import MixtureSpec, where
from flanmix.registry import Registry


def eval_grams(spec: MixtureSpec, registry: Registry, base_dir: Path, doc: YamlDoc | None
               ) -> tuple[set[int] | None, list[Path]]:
    """The n-gram hashes of the evaluation data named by `decontaminate` (None without it), and the files read."""
    dec = spec.decontaminate
    if dec is None:
        return None, []
    texts: list[str] = []
    for name in dec.tasks:
        try:
            task = registry.get(name)
        except FlanmixError as err:
            raise err.with_context(**where(doc, ["decontaminate", "tasks"])) from None
        for example in task.examples("validation"):
            texts.extend(str(v) for v in task.context(example).values() if isinstance(v, (str, int, float)))
    file_texts, files = eval_texts_from_files(dec.files, base_dir)
    texts.extend(file_texts)
    return build_ngram_set(texts, dec.ngram), files
