"""bench: evaluate self-supervised visual representations with the papers' protocols.

checkpoint → backbone → features (cached) → protocol → record → table.
"""
__version__ = "0.1.0"

# The public names resolve on first use (PEP 562) so that `bench --help` and `bench list` do not import torch.
_LAZY = {"Backbone": "backbones", "load_backbone": "backbones", "FeatureSet": "cache",
         "extract_features": "cache", "read_records": "records", "write_record": "records",
         "RunContext": "runner", "run_protocol": "runner", "evaluate": "api"}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'bench' has no attribute {name!r}")
    import importlib
    value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(__all__)
