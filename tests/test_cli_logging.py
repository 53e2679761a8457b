"""Logs under systemd: `<N>` syslog priorities on every line and no timestamps when stderr is the
journald stream systemd names in JOURNAL_STREAM; timestamps everywhere else."""
import logging
import os
import re
import signal
import subprocess
import sys
import time

from edge_agent.logging_setup import JournalFormatter
from hardware_sim.site import SimulatedSite


def run_agent_briefly(site: SimulatedSite, log_path, *, journal: bool) -> str:
    with open(log_path, "wb") as log:
        st = os.fstat(log.fileno())
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        env["JOURNAL_STREAM"] = f"{st.st_dev}:{st.st_ino}" if journal else f"{st.st_dev}:{st.st_ino + 1}"
        proc = subprocess.Popen([sys.executable, "-m", "edge_agent", "run", "--config", str(site.config_path)],
                                stdout=log, stderr=log, env=env)
        try:
            deadline = time.monotonic() + 15
            while "cloud link up" not in log_path.read_text() and time.monotonic() < deadline:
                time.sleep(0.1)
            site.broker.stop()  # a WARNING: the link goes down
            deadline = time.monotonic() + 15
            while "cloud link down" not in log_path.read_text() and time.monotonic() < deadline:
                time.sleep(0.1)
            site.broker.start()
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(15)
    return log_path.read_text()


def test_journald_gets_priorities_and_no_timestamps_a_terminal_gets_timestamps(tmp_path):
    site = SimulatedSite(tmp_path / "site")
    site.start(agent=False)
    try:
        journal = run_agent_briefly(site, tmp_path / "journal.log", journal=True)
        other = run_agent_briefly(site, tmp_path / "terminal.log", journal=False)
    finally:
        site.close()
    lines = [line for line in journal.splitlines() if line]
    assert lines and all(re.match(r"<[2-7]>", line) for line in lines), journal
    assert any(line.startswith("<6>edge_agent.agent: edge-agent ") for line in lines)
    assert any(line.startswith("<4>edge_agent.cloud: cloud link down") for line in lines), journal
    assert not re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", journal), "journald stamps the time itself"
    assert re.search(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ INFO edge_agent.agent: ", other, re.M), other
    assert "<6>" not in other


def test_every_line_of_a_traceback_keeps_the_priority():
    try:
        raise ValueError("register 40001 of unit 3: bad value")
    except ValueError:
        record = logging.LogRecord("edge_agent.agent", logging.ERROR, __file__, 1, "poll failed", None, sys.exc_info())
    text = JournalFormatter().format(record)
    assert text.startswith("<3>edge_agent.agent: poll failed\n<3>Traceback")
    assert all(line.startswith("<3>") for line in text.splitlines())
    debug = logging.LogRecord("x", logging.DEBUG, __file__, 1, "m", None, None)
    critical = logging.LogRecord("x", logging.CRITICAL, __file__, 1, "m", None, None)
    assert JournalFormatter().format(debug) == "<7>x: m" and JournalFormatter().format(critical) == "<2>x: m"
