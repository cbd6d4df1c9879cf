"""AuRA benchmarks: speed claims measured as ratios in one process; results as JSON in benchmarks/results/."""
