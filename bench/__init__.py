"""bench: evaluate self-supervised visual representations with the papers' protocols.

checkpoint → backbone → features (cached) → protocol → record → table.
"""
__version__ = "0.1.0"

from .backbones import Backbone, load_backbone  # noqa: E402
from .cache import FeatureSet, extract_features  # noqa: E402
from .records import read_records, write_record  # noqa: E402
from .runner import RunContext, run_protocol  # noqa: E402

__all__ = ["__version__", "Backbone", "load_backbone", "FeatureSet", "extract_features", "read_records",
           "write_record", "RunContext", "run_protocol"]
