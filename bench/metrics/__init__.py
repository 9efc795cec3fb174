"""Pure metric functions, each checked in tests against an independent computation."""
from .classification import accuracy_topk, mean_per_class_accuracy

__all__ = ["accuracy_topk", "mean_per_class_accuracy"]
