"""mimocorb2: multiple-in multiple-out configurable ring buffers for data acquisition."""

__version__ = "0.1.0"
