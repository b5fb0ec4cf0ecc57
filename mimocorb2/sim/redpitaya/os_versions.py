"""What each Red Pitaya OS release's SCPI server speaks, as far as the importer cares.

Facts (from the board's SCPI server sources and changelog):

* before 2.00-18 the data query is spelled ``ACQ:SOUR<n>:DATA:STA:N?`` (not ``STArt``),
  a binary block is not followed by ``\\r\\n``, ``SYST:BRD:Name?`` does not exist, and a
  read that wraps past the buffer end (start + n > 16384) overflows a stack buffer in
  the server (the simulator drops every connection, as the crashing server would);
* ``ACQ:TRig:FILL?`` exists from 1.04-28, ``ACQ:DEC:Factor`` from 2.00-30;
* ``ACQ:TRig:STAT?`` reads ``TD`` for "trigger disabled" up to 2.04-35 (so also right
  after ``ACQ:START``, before the trigger is armed) and for "trigger received" from 2.05-37;
* ``RP:RET_ON_ERROR`` exists from 2.07-43.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

__all__ = ["DEFAULT_OS", "OS_PROFILES", "Generation", "OsProfile", "os_profile"]


class Generation(Enum):
    """The two dialects of the board's SCPI server that matter to the importer."""

    OLDER = "older"  #: before 2.00-18: STA spelling, unterminated blocks, no wrapping reads
    CURRENT = "current"  #: 2.00-18 and later


@dataclass(frozen=True)
class OsProfile:
    """The SCPI features of one OS release (see the module docstring)."""

    version: str
    generation: Generation
    fill_query: bool = True  #: ``ACQ:TRig:FILL?`` known (1.04-28+)
    little_endian: bool = True  #: ``ACQ:DATA:BYTE:ORDER`` known
    dec_factor: bool = False  #: ``ACQ:DEC:Factor`` known (2.00-30+)
    ret_on_error: bool = False  #: ``RP:RET_ON_ERROR`` known (2.07-43+)
    stat_means_received: bool = False  #: ``STAT?`` TD = "trigger received" (2.05-37+)

    @property
    def older(self) -> bool:
        """True for the generation before 2.00-18."""
        return self.generation is Generation.OLDER

    @property
    def data_spelling(self) -> str:
        """The middle word of the positional data query: ``STA`` or ``STArt``."""
        return "STA" if self.older else "STArt"

    @property
    def block_terminated(self) -> bool:
        """Whether a binary block is followed by ``\\r\\n``."""
        return not self.older

    @property
    def board_name(self) -> bool:
        """Whether ``SYST:BRD:Name?`` exists (exactly from 2.00-18)."""
        return not self.older

    @property
    def wrapping_read_crashes(self) -> bool:
        """Whether a read past the buffer end crashes the server."""
        return self.older


_OLD = Generation.OLDER
_NEW = Generation.CURRENT

#: Profiles the simulator can play, by OS version.
OS_PROFILES: dict[str, OsProfile] = {
    p.version: p
    for p in (
        OsProfile("1.04-18", _OLD, fill_query=False, little_endian=False),
        OsProfile("1.04-28", _OLD, little_endian=False),
        OsProfile("2.00-15", _OLD, little_endian=False),
        OsProfile("2.00-18", _NEW),
        OsProfile("2.00-30", _NEW, dec_factor=True),
        OsProfile("2.05-37", _NEW, dec_factor=True, stat_means_received=True),
        OsProfile("2.07-43", _NEW, dec_factor=True, stat_means_received=True, ret_on_error=True),
    )
}
#: The simulator's default: the current generation with the "TD = disabled" quirk.
DEFAULT_OS = "2.00-30"


def os_profile(version: str) -> OsProfile:
    """The profile of ``version``; ``ValueError`` naming the known ones otherwise."""
    try:
        return OS_PROFILES[version]
    except KeyError:
        raise ValueError(
            f"unknown OS version {version!r}; the simulator knows {', '.join(OS_PROFILES)}"
        ) from None
