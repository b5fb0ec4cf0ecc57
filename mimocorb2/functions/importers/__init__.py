"""Prebuilt importers: workers that bring data from hardware into a buffer.

- :mod:`.redpitaya`: ``importers.redpitaya.waveform``, a Red Pitaya STEMlab 125-14
  read over its SCPI server.

Submodules are imported on demand (importing this package is cheap).
"""
