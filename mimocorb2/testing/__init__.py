"""Helpers for tests, benchmarks and the demo: a real daemon in a subprocess.

    from mimocorb2.testing import DaemonProcess, segments_of
"""

from ._daemon import DaemonProcess, segments_of

__all__ = ["DaemonProcess", "segments_of"]
