"""The one DataFrame shape of bench's numbers: `bench.results.load()` (records) and `bench.reference.load()` (the
papers' documented numbers) share these columns, so they concatenate and join. A leaf module: the reference data
and the records both build on it, and it imports neither (bench.reference → bench.results → bench.tables would
otherwise close a circle)."""
from __future__ import annotations

from .errors import BenchError

__all__ = ["COLUMNS", "dataframe"]

COLUMNS = ("source", "protocol", "preset", "dataset", "metric", "value", "method", "arch", "backbone", "setting",
           "comparable", "reasons", "fingerprint", "run_id", "record", "paper", "method_key", "arch_key")


def dataframe(rows: list[dict]):
    try:
        import pandas as pd
    except ModuleNotFoundError:
        raise BenchError("the DataFrame API needs pandas: pip install 'bench[dataframe]'") from None
    return pd.DataFrame(rows, columns=list(COLUMNS)).astype({"value": "float64", "comparable": "bool"})
