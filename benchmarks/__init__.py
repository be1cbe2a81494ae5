"""rtmpd's fan-out and ingest benchmark against nginx-rtmp (see benchmarks/README.md).

Not a test suite: ``python -m benchmarks.run`` runs it; CI runs only a short smoke run.
"""
