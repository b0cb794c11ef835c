"""Benchmarks (`make bench`). Not unit tests: each prints figures against a same-run baseline."""
