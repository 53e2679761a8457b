"""The demo: a simulated garage with the agent driving it, shown live in the terminal.

    python -m hardware_sim.demo [--speed 60] [--keep DIR]

Two chargers (a Bender CC613 on Modbus TCP, a Heidelberg on Modbus RTU over a pty), a card
reader at each, residents tapping cards, a cloud outage, and the sync afterwards.
"""
from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from edge_agent.store import Store

from .cloud_view import format_event
from .site import RESIDENTS, UNKNOWN_TOKEN, SimulatedSite

NAMES = {u["id"]: u["name"] for u in RESIDENTS}
CARD_OWNER = {t: u["name"] for u in RESIDENTS for t in u["tokens"]}
KARI, OLA, INGRID, PER = "04A2B3C4D5", "0A1B2C3D4E", "1122334455", "DEADBEEF01"
STATE_TEXT = {"A": "no car", "B": "car plugged in, not charging", "C": "CHARGING", "D": "CHARGING",
              "E": "error", "F": "fault"}


class LiveView:
    """Redraws the screen twice a second on a terminal; prints plain lines otherwise."""

    def __init__(self, site: SimulatedSite) -> None:
        self.site = site
        self.story: list[str] = []
        self.started = time.monotonic()
        self.tty = sys.stdout.isatty()
        self._printed_events = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def say(self, text: str) -> None:
        line = f"[{time.monotonic() - self.started:5.1f}s] {text}"
        self.story.append(line)
        if not self.tty:
            print(re.sub(r"\033\[[0-9;]*m", "", line), flush=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        self.draw()

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            self.draw()

    def _outbox_pending(self) -> str:
        try:
            with Store(self.site.data_dir, read_only=True) as store:
                return str(store.outbox_pending())
        except Exception:  # noqa: BLE001 - the agent may not have created it yet
            return "?"

    def draw(self) -> None:
        site = self.site
        cloud = site.cloud
        events = sorted(cloud.unique_events, key=lambda e: e["seq"]) if cloud else []
        if not self.tty:
            for event in events[self._printed_events:]:
                print("          cloud <- " + format_event(event, user_names=NAMES), flush=True)
            self._printed_events = len(events)
            return
        lines = ["\033[2J\033[H\033[1medge-agent demo: a simulated garage\033[0m"
                 f"   (simulated time runs {site.speed:g}x for the energy)", ""]
        link = "\033[32mUP\033[0m" if site.broker.running else "\033[31mDOWN (outage)\033[0m"
        lines.append(f"cloud broker: {link}    events in the gateway's outbox, not yet acknowledged: "
                     f"{self._outbox_pending()}    events received by the cloud: {len(events)}")
        lines.append("")
        lines.append("\033[1mIn the garage\033[0m")
        for evse, charger in site.chargers.items():
            state_letter = charger.state
            lines.append(f"  charger {evse} ({charger.model:26}) {STATE_TEXT.get(state_letter, state_letter):30}"
                         f" offered {charger.setpoint_a:4.1f} A   meter {charger.energy_wh / 1000:10.3f} kWh")
        lines.append("")
        lines.append("\033[1mWhat happens\033[0m")
        lines += [f"  {s}" for s in self.story[-9:]]
        lines.append("")
        lines.append("\033[1mWhat the cloud has received\033[0m (newest last)")
        lines += [f"  {format_event(e, user_names=NAMES)}" for e in events[-12:]]
        sys.stdout.write("\n".join(lines) + "\n")
        sys.stdout.flush()


def run_story(site: SimulatedSite, view: LiveView, pause: float) -> None:
    say = view.say
    say("the cloud publishes the user list (4 residents) and the group tariffs")
    site.publish_lists()
    site.cloud.wait_for(lambda: (site.cloud.state or {}).get("tariffs_version") == 1, 15)
    time.sleep(pause)

    say("Kari taps her card at charger 1, then plugs in her car")
    site.tap("1", KARI)
    time.sleep(pause / 2)
    site.plug_and_charge("1")
    time.sleep(pause * 1.5)
    say("Ola plugs in at charger 2 (Modbus RTU) first, then taps his card")
    site.plug_and_charge("2")
    time.sleep(pause / 2)
    site.tap("2", OLA)
    time.sleep(pause * 2)
    say("Kari unplugs: her session ends and is priced at the residents' tariff")
    site.unplug("1")
    time.sleep(pause * 1.5)

    say("\033[31mCLOUD OUTAGE\033[0m: the broker goes down; charging goes on from the cached lists")
    site.broker.stop()
    time.sleep(pause)
    say("Ola taps his card again: his session ends, offline")
    site.tap("2", OLA)
    time.sleep(pause / 2)
    site.unplug("2")
    time.sleep(pause)
    say("Ingrid (a guest) taps at charger 1 and plugs in: guest tariff with start fee, offline")
    site.tap("1", INGRID)
    time.sleep(pause / 2)
    site.plug_and_charge("1")
    time.sleep(pause * 2)
    say("Per's card is blocked: refused at charger 2")
    site.tap("2", PER)
    time.sleep(pause)
    say("an unknown card at charger 2: refused, since the cloud cannot be asked")
    site.tap("2", UNKNOWN_TOKEN)
    time.sleep(pause)
    say("Ingrid unplugs")
    site.unplug("1")
    time.sleep(pause)

    say("\033[32mthe cloud is back\033[0m: the gateway re-sends every event in seq order, marked offline")
    site.broker.start()
    site.cloud.wait_for(lambda: (site.cloud.state or {}).get("outbox_pending") == 0, 30)
    time.sleep(pause)
    ended = [e for e in site.cloud.unique_events if e["type"] == "session_ended"]
    say(f"all synced: {len(ended)} sessions, {len(site.cloud.unique_events)} events, "
        f"{site.cloud.duplicate_count} duplicates (dropped by id), outbox empty")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hardware_sim.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--speed", type=float, default=60.0, help="how much faster than real time cars charge")
    parser.add_argument("--pause", type=float, default=3.0, help="seconds between the story's steps")
    parser.add_argument("--keep", metavar="DIR", help="keep the site's files (config, database, logs) in DIR")
    args = parser.parse_args(argv)
    workdir = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="edge-agent-demo-"))
    if args.keep and workdir.exists():
        shutil.rmtree(workdir)
    site = SimulatedSite(workdir, speed=args.speed, poll_interval_s=0.5, ack_timeout_s=10,
                         meter_values_interval_s=15)
    print("starting the simulated site: mosquitto, chargers, readers, cloud, agent ...", flush=True)
    site.start()
    view = LiveView(site)
    view.start()
    try:
        run_story(site, view, args.pause)
    except KeyboardInterrupt:
        pass
    finally:
        view.stop()
        site.stop_agent()
        print("\nSessions as the gateway recorded them (edge-agent sessions):\n", flush=True)
        subprocess.run([sys.executable, "-m", "edge_agent", "sessions", "--data-dir", str(site.data_dir)],
                       check=False)
        print(f"\nagent log: {site.agent_log}" if args.keep else "")
        site.close()
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
