"""Datasets for training: readers of the official annotation formats and the synthetic shapeworld."""
