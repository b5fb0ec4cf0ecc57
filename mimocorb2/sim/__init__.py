"""Simulated hardware for mimocorb2: detector pulse sources and a Red Pitaya simulator.

Submodules (import them explicitly, this package imports nothing heavy):

- :mod:`mimocorb2.sim.pulses`: pure-numpy, seedable waveform sources (a generic
  pulse simulator, a 4-channel cosmic-muon detector with muon decays, a gamma source
  with Cs-137 / Co-60 lines and a Compton continuum).
- :mod:`mimocorb2.sim.redpitaya`: a Red Pitaya SCPI server simulator.
"""
