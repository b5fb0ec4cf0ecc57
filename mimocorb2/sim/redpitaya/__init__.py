"""A Red Pitaya STEMlab 125-14 SCPI server simulator (asyncio TCP).

It speaks the board's SCPI dialect with the board's quirks, so the importer can be
developed and tested without hardware:

* a command runs only when its ``\\r\\n`` arrives; one write may carry several;
* set commands never answer; a query answers ``<text>\\r\\n`` or a binary block
  ``#<n><len><payload>`` followed by ``\\r\\n`` from OS 2.00-18 on (big-endian unless
  ``ACQ:DATA:BYTE:ORDER LEND``);
* a failed query or an unknown command answers nothing and queues an error
  (``*STB?`` bit 0x04, ``SYST:ERR:NEXT?``); from OS 2.07-43, ``RP:RET_ON_ERROR ON``
  (board-wide) makes a failed query of a known command answer a bare ``\\r\\n``;
  unknown commands still answer nothing;
* up to OS 2.04-35 ``ACQ:TRig:STAT?`` answers ``TD`` whenever the trigger source is
  disabled, i.e. also right after ``ACQ:START`` before ``ACQ:TRig <source>`` arms it;
* each channel has a 16384-sample circular buffer; samples written before the last
  ``ACQ:START`` stay in it ("stale" pre-trigger data if a client arms too early);
* ``os="1.04-18"``, ``"1.04-28"`` or ``"2.00-15"`` play the older generation
  (see :mod:`.os_versions`): ``ACQ:SOUR<n>:DATA:STA:N?`` spelling, blocks without
  ``\\r\\n``, and a read past the buffer end crashes the server (every connection drops).

Modules: :mod:`.hardware` (constants), :mod:`.signal` (pulses and noise),
:mod:`.os_versions` (what each OS speaks), :mod:`.commands` (SCPI header matching),
:mod:`.board` (settings, acquisition, commands), :mod:`.server` (TCP server, fault
plan, thread runner), :mod:`.cli` (``mimocorb2-redpitaya-sim --host 127.0.0.1 --port
5000 [--os 1.04-28] ...``).
"""

from .board import Board, ServerAction
from .cli import main
from .hardware import ADC_MAX, ADC_MIN, ADC_RATE, BUFFER_SAMPLES, DECIMATIONS, FULL_SCALE
from .os_versions import DEFAULT_OS, OS_PROFILES, Generation, OsProfile, os_profile
from .server import Faults, RedPitayaSimulator, SimulatorThread
from .signal import PulseConfig, PulseSource, Trigger

__all__ = [
    "ADC_MAX",
    "ADC_MIN",
    "ADC_RATE",
    "BUFFER_SAMPLES",
    "DECIMATIONS",
    "DEFAULT_OS",
    "FULL_SCALE",
    "OS_PROFILES",
    "Board",
    "Faults",
    "Generation",
    "OsProfile",
    "PulseConfig",
    "PulseSource",
    "RedPitayaSimulator",
    "ServerAction",
    "SimulatorThread",
    "Trigger",
    "main",
    "os_profile",
]
