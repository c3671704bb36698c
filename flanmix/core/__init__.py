"""The leaf of flanmix: errors, YAML/JSONL reading with line numbers, atomic writes, the strict pydantic base and
the shared vocabularies (template types, stage names). It imports nothing else of the project (enforced by
`tests/test_architecture.py`), so every layer above may use it.
"""

from flanmix.core.errors import FlanmixError

__all__ = ["FlanmixError"]
