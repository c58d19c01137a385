"""`evaluate` metric modules (one folder per metric, loadable with `evaluate.load(folder)`)."""
