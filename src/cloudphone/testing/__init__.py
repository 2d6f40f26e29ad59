"""Test support that ships with cloudphone: local stand-ins for remote services, peer helpers.

The gateway's end-to-end tests and the benchmarks reuse these, so they live in the package
rather than under ``tests/``.
"""
