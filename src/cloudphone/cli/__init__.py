"""The ``cloudphone`` command line."""
