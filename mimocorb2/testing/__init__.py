"""Helpers for tests, benchmarks and the demo: a real daemon in a subprocess, polling, /proc.

    from mimocorb2.testing import DaemonProcess, segments_of, wait_until, is_alive
"""

from ._daemon import DaemonProcess, segments_of
from ._polling import wait_until
from ._procfs import descendants, is_alive, parent_of

__all__ = ["DaemonProcess", "descendants", "is_alive", "parent_of", "segments_of", "wait_until"]
