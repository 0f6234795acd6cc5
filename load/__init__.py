"""Load generation and benchmarks for tunnelwatch."""
