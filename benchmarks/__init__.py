"""Benchmarks: certauth side by side with MSAL and azure-identity (``python -m benchmarks``).

Not part of the test suite (too slow and noisy); ``tests/test_benchmarks_smoke.py`` runs
``python -m benchmarks --smoke`` so the code cannot rot.
"""
