"""Storage: the declarative base, the one session factory, migrations."""
