"""Benchmarks: commands that print figures (``ehrfetch bench …``), never timed tests."""
