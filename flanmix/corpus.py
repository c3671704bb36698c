"""Text drawn from the bundled tasks, e.g. to train a tokenizer that fits them."""

from __future__ import annotations

import random

from flanmix.core.constants import TEMPLATE_TYPES
from flanmix.core.errors import FlanmixError
from flanmix.registry import Registry, in_flan_catalog


def bundled_corpus(max_rows: int = 20000, seed: int = 0, extra_dirs: tuple = ()) -> list[str]:
    """Rendered inputs and targets of every registered task outside the FLAN catalog, round-robin over tasks,
    templates and variants."""
    rng = random.Random(seed)
    tasks = [task for task in Registry.discover(extra_dirs) if not in_flan_catalog(task)]
    texts: list[str] = []
    per_task = max(1, max_rows // max(1, len(tasks)))
    for task in tasks:
        try:
            examples = task.examples("train")
        except FlanmixError:  # a hub-sourced task without a network or a cached copy: nothing to draw from
            continue
        if not examples:
            continue
        for n in range(per_task):
            example = examples[rng.randrange(len(examples))]
            cot = task.has_cot and n % 3 == 0
            indices = task.template_indices(cot=cot)
            variant = TEMPLATE_TYPES[n % 2] if task.has_options else "zs_noopt"
            row = task.render(example, template_type=variant, template_idx=indices[n % len(indices)], cot=cot,
                              seed=seed, randomize_options=True)
            texts.append(row["inputs"] + "\n" + row["targets"])
    return texts[:max_rows]
