"""The speed and memory benchmarks behind `make bench` and BENCHMARKS.md (outside the student package)."""
