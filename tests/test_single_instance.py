"""One agent per data directory, on real parts: mosquitto, the simulated chargers and readers, and
agent processes. A second `edge-agent run` is refused before it opens the store, a bus, a reader
or the broker; the lock goes with its holder, SIGKILL included."""
import re
import time

from edge_agent.cli import ExitCode
from edge_agent.instance_lock import LOCK_FILE
from hardware_sim.site import SimulatedSite
from helpers import edge_agent


def broker_connections(site: SimulatedSite) -> int:
    """Connections the broker accepted with the gateway's client id (its log has one line each)."""
    text = site.broker.log_path.read_text(errors="replace")
    return len(re.findall(rf"New client connected from \S+ as {re.escape(site.gateway_id)} ", text))


def test_a_second_agent_is_refused_at_once_and_the_first_goes_on_undisturbed(tmp_path):
    with SimulatedSite(tmp_path / "site", speed=60, poll_interval_s=0.2) as site:
        first = site.agent
        assert site.cloud.wait_for(lambda: (site.cloud.state or {}).get("online") is True, 30), site.agent_log_tail()
        assert site.wait(lambda: broker_connections(site) == 1, 10), site.broker.log_tail()
        online_states = len(site.cloud.state_history)

        started = time.monotonic()
        second = edge_agent("run", "--config", str(site.config_path), timeout=30)
        elapsed = time.monotonic() - started

        assert second.returncode == ExitCode.BUSY, second.stderr
        assert elapsed < 5, f"the second agent took {elapsed:.1f} s to give up"
        assert f"process {first.pid}" in second.stderr and str(site.data_dir) in second.stderr, second.stderr
        assert "Traceback" not in second.stderr
        time.sleep(3)  # two agents with one client id kick each other off within a second
        assert broker_connections(site) == 1, site.broker.log_tail()
        assert first.poll() is None, site.agent_log_tail()
        assert len(site.cloud.state_history) == online_states  # no reconnect of the first, no new state
        assert not [e for e in site.cloud.events if e["type"] == "evse_fault"], site.cloud.events
        assert (site.data_dir / LOCK_FILE).read_text().strip() == str(first.pid)

        # Store-writing commands wait for the agent to stop; read-only ones keep working.
        migrate = edge_agent("migrate", "--config", str(site.config_path))
        assert migrate.returncode == ExitCode.BUSY and f"process {first.pid}" in migrate.stderr, migrate
        for command in (["outbox"], ["sessions"], ["status", "--json"]):
            result = edge_agent(*command, "--config", str(site.config_path))
            assert result.returncode == 0, (command, result.stdout, result.stderr)

        # The kernel drops the lock with the process: no stale lock after a crash.
        site.kill_agent()
        site.start_agent()
        assert site.wait(lambda: broker_connections(site) == 2, 20), site.agent_log_tail()
        time.sleep(2)
        assert site.agent.poll() is None, site.agent_log_tail()
        assert (site.data_dir / LOCK_FILE).read_text().strip() == str(site.agent.pid)


def test_migrate_takes_the_lock_when_no_agent_runs(tmp_path):
    config = tmp_path / "site.yaml"
    data_dir = tmp_path / "data"
    config.write_text(f"""\
gateway_id: gw-lock
timezone: Europe/Oslo
data_dir: {data_dir}
cloud:
  host: 127.0.0.1
chargers:
  - evse_id: "1"
    model: bender-cc613
    host: 127.0.0.1
""", encoding="utf-8")
    data_dir.mkdir()
    result = edge_agent("migrate", "--config", str(config))
    assert result.returncode == 0, result.stderr
    assert (data_dir / "edge-agent.db").exists()
