"""The HTTP API (FastAPI): thin adapters over the domain services."""
