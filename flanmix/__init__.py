"""flanmix: Flan-style instruction-tuning mixtures and alignment training.

The data side (this package) never imports torch at module level; the training layer lives in `trainers`.
"""

__version__ = "0.1.0"

from flanmix.core.errors import FlanmixError  # noqa: E402

__all__ = ["FlanmixError", "__version__"]
