"""A run's results (results.json) and its report: summary.md, the CSV, the plots, the provenance."""
