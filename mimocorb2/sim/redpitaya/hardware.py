"""Fixed facts of the simulated STEMlab 125-14: clock, buffer, ADC range, input ranges."""

from __future__ import annotations

__all__ = ["ADC_MAX", "ADC_MIN", "ADC_RATE", "BUFFER_SAMPLES", "DECIMATIONS", "FULL_SCALE", "HALF_BUFFER"]

#: ADC clock of the STEMlab 125-14, samples per second.
ADC_RATE = 125_000_000
#: Samples per channel in the circular acquisition buffer.
BUFFER_SAMPLES = 16384
#: Samples the board keeps after the trigger when ``ACQ:TRig:DLY`` is 0.
HALF_BUFFER = BUFFER_SAMPLES // 2
#: 14-bit signed ADC range in RAW units.
ADC_MIN, ADC_MAX = -8192, 8191
#: Allowed ``ACQ:DEC`` values (every power of two from 1 to 65536).
DECIMATIONS: tuple[int, ...] = tuple(2**k for k in range(17))
#: Full-scale input voltage per gain (jumper) setting.
FULL_SCALE = {"LV": 1.0, "HV": 20.0}


def sample_period(decimation: int) -> float:
    """Seconds between two stored samples at ``decimation``."""
    return decimation / ADC_RATE


def samples_in(seconds: float, period: float) -> int:
    """Whole samples written in ``seconds`` (robust to float rounding of the clock)."""
    return int(seconds / period + 1e-4)
