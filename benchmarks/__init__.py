"""Benchmarks of the Phoenix textbook: ``python -m benchmarks.<subject> [--quick]``.

Each subject prints a table and writes ``<subject>-<backend>.{json,csv,svg}`` into
``--out`` (default ``benchmarks/results``). ``benchmarks/RESULTS.md`` records the
numbers and the goals; ``make bench`` runs every subject.
"""
