"""iterum-sidecar: a drop-in Python replacement for the Iterum pipeline sidecar."""

__version__ = "0.1.0"
