"""The agent's polling of one RS-485 bus, without the rest of the agent: drivers.modbus
(BusRegistry, SerialBus, ModbusCharger) driven as Site._poll_loop drives it, with the frame gap
given on the command line instead of the map's. Runs until SIGTERM.

    python -m benchmarks._bus_driver PORT --units 1..8 --gap 0.002 [--interval 0.1]
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import time

from drivers.errors import DeviceError
from drivers.modbus import BusRegistry, create_charger


async def poll_forever(port: str, units: list[int], gap_s: float, interval_s: float) -> None:
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    async with BusRegistry() as registry:
        chargers = [create_charger(model="heidelberg-energy-control", name=f"evse {unit}", registry=registry,
                                   serial=port, baudrate=19200, parity="N", unit=unit, timeout_s=0.5,
                                   frame_gap_s=gap_s) for unit in units]

        async def loop(charger: object) -> None:
            needs_setup = True
            while True:
                started = time.monotonic()
                try:
                    if needs_setup:
                        await charger.setup()  # type: ignore[attr-defined]
                        await charger.enable(False)  # type: ignore[attr-defined]
                        needs_setup = False
                    await charger.poll()  # type: ignore[attr-defined]
                    await charger.keepalive()  # type: ignore[attr-defined]
                except DeviceError as exc:
                    print(f"{exc}", flush=True)
                await asyncio.sleep(max(0.0, interval_s - (time.monotonic() - started)))

        tasks = [asyncio.create_task(loop(charger)) for charger in chargers]
        await stop.wait()
        for task in tasks:
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*tasks, return_exceptions=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("port")
    parser.add_argument("--units", type=int, default=8)
    parser.add_argument("--gap", type=float, required=True)
    parser.add_argument("--interval", type=float, default=0.1)
    args = parser.parse_args()
    asyncio.run(poll_forever(args.port, list(range(1, args.units + 1)), args.gap, args.interval))


if __name__ == "__main__":
    main()
