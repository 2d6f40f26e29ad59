"""cloudphone: the server side of a white-label softphone app."""

__version__ = "0.1.0"
