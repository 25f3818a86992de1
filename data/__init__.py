"""Sparse MNIST and Caltech-101 datasets, sparsification and on-device batching."""
