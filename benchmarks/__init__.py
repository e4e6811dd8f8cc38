"""Side-by-side benchmarks against peer libraries (run with ``nox -s bench``)."""
