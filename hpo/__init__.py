"""Study runner, storage, workers and reports for sparse-cnn-hpo."""
