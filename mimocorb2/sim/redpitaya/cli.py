"""Console entry ``mimocorb2-redpitaya-sim``: serve a simulated board until interrupted."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence

from .os_versions import DEFAULT_OS, OS_PROFILES
from .server import Faults, RedPitayaSimulator
from .signal import PulseConfig

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="mimocorb2-redpitaya-sim",
        description="Red Pitaya STEMlab 125-14 SCPI server simulator (for mimocorb2 tests and demos).",
    )
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=5000, help="0: pick a free port (printed)")
    ap.add_argument("--os", default=DEFAULT_OS, choices=list(OS_PROFILES), dest="os_version",
                    help="OS release whose SCPI dialect to speak (before 2.00-18: STA spelling, "
                         "blocks without \\r\\n, a read past the buffer end crashes the server)")
    ap.add_argument("--older-os", action="store_const", const="1.04-28", dest="os_version",
                    help="short for --os 1.04-28 (the older generation)")
    ap.add_argument("--rate", type=float, default=1000.0, help="pulse rate, Hz")
    ap.add_argument("--shape", default="exponential", choices=["exponential", "gaussian", "rectangular"])
    ap.add_argument("--rise-time", type=float, default=16e-9, help="s")
    ap.add_argument("--decay-time", type=float, default=240e-9, help="s")
    ap.add_argument("--width", type=float, default=80e-9, help="s (gaussian sigma, rectangular width)")
    ap.add_argument("--spectrum", default="uniform",
                    choices=["fixed", "uniform", "exponential", "gaussian", "lines"])
    ap.add_argument("--amplitude", type=float, default=0.5, help="V")
    ap.add_argument("--amplitude-min", type=float, default=0.05, help="V")
    ap.add_argument("--amplitude-max", type=float, default=0.9, help="V")
    ap.add_argument("--amplitude-sigma", type=float, default=0.05, help="V")
    ap.add_argument("--lines", default="0.3:1,0.6:0.5", help="V:weight,... for --spectrum lines")
    ap.add_argument("--noise", type=float, default=0.002, help="V rms")
    ap.add_argument("--offset", type=float, default=0.0, help="V baseline")
    ap.add_argument("--scale-in1", type=float, default=1.0)
    ap.add_argument("--scale-in2", type=float, default=-0.5)
    ap.add_argument("--delay-in2", type=float, default=0.0, help="s")
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--ret-on-error", action="store_true",
                    help="start with RP:RET_ON_ERROR ON (needs --os 2.07-43)")
    ap.add_argument("--no-lend", action="store_true", help="refuse ACQ:DATA:BYTE:ORDER")
    ap.add_argument("--no-fill", action="store_true",
                    help="refuse ACQ:TRig:FILL? (as OS 1.04-18 does)")
    ap.add_argument("--drop-every", type=int, default=0, help="drop connections every n-th ACQ:START")
    ap.add_argument("--stall-every", type=int, default=0, help="stall every n-th ACQ:START")
    ap.add_argument("--stall-seconds", type=float, default=1.0)
    ap.add_argument("-v", "--verbose", action="store_true")
    return ap


def _simulator(args: argparse.Namespace) -> RedPitayaSimulator:
    lines = tuple(
        (float(v), float(w)) for v, w in (item.split(":") for item in args.lines.split(",") if item)
    )
    pulses = PulseConfig(
        rate=args.rate, shape=args.shape, rise_time=args.rise_time, decay_time=args.decay_time,
        width=args.width, spectrum=args.spectrum, amplitude=args.amplitude,
        amplitude_min=args.amplitude_min, amplitude_max=args.amplitude_max,
        amplitude_sigma=args.amplitude_sigma, lines=lines, noise=args.noise, offset=args.offset,
        scale_IN1=args.scale_in1, scale_IN2=args.scale_in2, delay_IN2=args.delay_in2,
    )
    return RedPitayaSimulator(
        args.host, args.port, pulses=pulses, seed=args.seed, os=args.os_version,
        ret_on_error=args.ret_on_error,
        supports_little_endian=False if args.no_lend else None,
        supports_fill=False if args.no_fill else None,
        faults=Faults(drop_every=args.drop_every, stall_every=args.stall_every,
                      stall_seconds=args.stall_seconds),
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry ``mimocorb2-redpitaya-sim``: serve until interrupted."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(name)s %(message)s")
    try:
        sim = _simulator(args)
    except ValueError as exc:
        print(f"mimocorb2-redpitaya-sim: {exc}", file=sys.stderr)
        return 2

    async def serve() -> None:
        await sim.start()
        print(f"listening on {sim.host}:{sim.port}", flush=True)
        try:
            await asyncio.Event().wait()
        finally:
            await sim.stop()

    try:
        asyncio.run(serve())
    except KeyboardInterrupt:
        pass
    return 0
