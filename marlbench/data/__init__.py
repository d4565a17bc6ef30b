"""Datasets: the HDF5 format, collection with behaviour policies, and loading for training."""

from marlbench.data.dataset import OfflineDataset, TrajectoryBatch, TransitionBatch

__all__ = ["OfflineDataset", "TrajectoryBatch", "TransitionBatch"]
