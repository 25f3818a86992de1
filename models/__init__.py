"""Sparsity-invariant convolution and the sparse / dense CNN families."""
