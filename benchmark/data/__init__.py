"""Datasets: the in-memory form, loaders per source format, the synthetic generator, k-core."""
from benchmark.data.dataset import DataError, Dataset, build_dataset, kcore

__all__ = ["DataError", "Dataset", "build_dataset", "kcore"]
