"""Site config: the shapes installers write load; every mistake names its key path and line."""
from __future__ import annotations

import dataclasses
import sys
import textwrap
import types
from pathlib import Path

import pytest

from edge_agent.config import (
    CHARGER_MODELS,
    ConfigError,
    ConfigIssue,
    SiteConfig,
    load_config,
    parse_config_text,
)

EXAMPLE = Path(__file__).resolve().parent.parent / "config" / "example-site.yaml"
MODELS = CHARGER_MODELS  # explicit, so these tests do not depend on drivers/modbus

# contract/site-config.md, first example, verbatim.
CONTRACT_EXAMPLE = '''\
gateway_id: gw-0042                # MQTT client id and topic segment
timezone: Europe/Oslo              # site local time, used by tariff time restrictions
data_dir: /var/lib/edge-agent      # SQLite database and state; never a tmpfs by default

cloud:
  host: mqtt.example.net
  port: 8883                       # default 1883 without tls, 8883 with
  topic_prefix: edge/v1            # default
  tls:                             # optional; mutual TLS with a per-gateway certificate
    ca_file: /etc/edge-agent/ca.pem
    cert_file: /etc/edge-agent/gw.pem
    key_file: /etc/edge-agent/gw.key
  ack_timeout_s: 60                # re-send an unacknowledged event after this long

authorization:
  offline_unknown: reject          # reject | accept: unknown tokens while the cloud is unreachable
  online_timeout_s: 3              # wait this long for ~/auth/response before deciding locally
  connect_timeout_s: 60            # after a tap, how long the driver has to plug in

chargers:
  - evse_id: "1"
    model: bender-cc613            # a register map shipped in drivers/
    host: 10.0.0.21                # Modbus TCP
    port: 502                      # default 502
    unit: 255                      # default: the model's usual unit id
    max_current_a: 16              # what a session is offered; default: the charger's hardware maximum
  - evse_id: "2"
    model: heidelberg-energy-control
    serial: /dev/ttyUSB0           # Modbus RTU; chargers on one serial port share that bus
    baudrate: 19200                # default: the model's factory setting
    parity: E                      # N | E | O
    unit: 1

readers:
  - driver: rdm6300                # 125 kHz EM4100 reader on a serial port (STX, 10 hex, 2 hex XOR, ETX)
    port: /dev/ttyAMA0             # 9600 8N1; the token is all 10 hex digits of the frame
    evse_id: "1"                   # omit for a site-wide reader: the tag goes to the next EVSE plugged in
  - driver: pn532                  # NFC via nfcpy, e.g. usb or tty:AMA0:pn532
    device: usb
    evse_id: "2"
'''

# contract/site-config.md, the load-management example (verbatim), on top of a minimal head.
CONTRACT_LOAD_MANAGEMENT = '''\
gateway_id: gw-0043
timezone: Europe/Oslo
cloud:
  host: mqtt.example.net
site:
  max_current_a: 63                # per phase, the main fuse
  phases: 3
  safe_current_a: 32               # per phase for all chargers together while the site meter is silent
  meter:                           # optional: the grid connection meter, for dynamic headroom
    model: eastron-sdm630
    host: 10.0.0.30                # or serial: ..., a Modbus TCP gateway is common
    port: 502
    unit: 2
  meter_timeout_s: 5               # no fresh reading for this long -> safe_current_a
circuits:                          # optional sub-distribution boards
  - id: garage-b
    max_current_a: 32
chargers:
  - evse_id: "7"
    model: bender-cc613
    host: 10.0.0.27
    circuit: garage-b              # default: directly on the site connection
    phases: 3                      # 1 or 3 (what the charger is wired for)
    phase_l1: L2                   # which site phase the charger's L1 is on (rotation)
    priority: 0                    # higher is served first when there is not enough
'''

MINIMAL = '''\
gateway_id: gw-1
timezone: Europe/Oslo
cloud:
  host: localhost
chargers:
  - evse_id: "1"
    model: bender-cc613
    host: 10.0.0.21
'''


def parse(text: str, **kwargs: object) -> SiteConfig:
    kwargs.setdefault("known_models", MODELS)
    return parse_config_text(textwrap.dedent(text), **kwargs)  # type: ignore[arg-type]


def issues(text: str, **kwargs: object) -> list[ConfigIssue]:
    with pytest.raises(ConfigError) as caught:
        parse(text, **kwargs)
    return caught.value.errors


def line_of(text: str, needle: str) -> int:
    """1-based line of the only line of `text` that contains `needle`."""
    found = [n for n, line in enumerate(textwrap.dedent(text).splitlines(), 1) if needle in line]
    assert len(found) == 1, (needle, found)
    return found[0]


def only_issue(text: str, **kwargs: object) -> ConfigIssue:
    found = issues(text, **kwargs)
    assert len(found) == 1, [str(i) for i in found]
    return found[0]


def assert_issue(text: str, path: str, needle: str, *message_parts: str) -> ConfigIssue:
    """Exactly one issue, at `path` on the line containing `needle`, mentioning every part."""
    issue = only_issue(text)
    assert (issue.path, issue.line) == (path, line_of(text, needle)), str(issue)
    for part in message_parts:
        assert part in issue.message, str(issue)
    return issue


# --------------------------------------------------------------------------- shapes that load


def test_example_file_loads() -> None:
    config = load_config(EXAMPLE, known_models=MODELS)
    assert config.path == EXAMPLE
    assert config.gateway_id == "gw-example"
    assert config.cloud.host == "localhost"
    assert config.cloud.port == 1883
    assert config.topic_root() == "edge/v1/gw-example"
    bender, heidelberg = config.chargers
    assert (bender.model, bender.transport, bender.host, bender.port, bender.unit) == (
        "bender-cc613", "tcp", "192.168.10.21", 502, 255)
    assert (heidelberg.model, heidelberg.transport, heidelberg.serial, heidelberg.port) == (
        "heidelberg-energy-control", "rtu", "/dev/ttyUSB0", None)
    assert (heidelberg.baudrate, heidelberg.parity, heidelberg.stopbits) == (19200, "E", 1)
    assert [(r.driver, r.port, r.evse_id) for r in config.readers] == [
        ("rdm6300", "/dev/ttyAMA0", "1"), ("rdm6300", "/dev/ttyUSB1", "2")]


def test_contract_example_loads() -> None:
    config = parse(CONTRACT_EXAMPLE)
    assert config.timezone == "Europe/Oslo"
    assert config.tzinfo.key == "Europe/Oslo"
    assert config.data_dir == Path("/var/lib/edge-agent")
    assert config.cloud.port == 8883
    assert config.cloud.tls is not None
    assert config.cloud.tls.key_file == Path("/etc/edge-agent/gw.key")
    assert config.cloud.ack_timeout_s == 60
    assert config.authorization.online_timeout_s == 3
    assert [c.evse_id for c in config.chargers] == ["1", "2"]
    assert config.chargers[0].max_current_a == 16
    assert config.chargers[1].parity == "E"
    assert config.chargers[1].stopbits is None  # the model's factory setting
    assert config.readers[1].device == "usb"
    assert config.site is None
    assert config.circuits == ()


def test_contract_load_management_example_loads() -> None:
    config = parse(CONTRACT_LOAD_MANAGEMENT)
    assert config.site is not None
    assert (config.site.max_current_a, config.site.phases, config.site.safe_current_a) == (63, 3, 32)
    assert config.site.meter is not None
    assert (config.site.meter.model, config.site.meter.host, config.site.meter.unit) == (
        "eastron-sdm630", "10.0.0.30", 2)
    assert config.site.meter_timeout_s == 5
    assert [(c.id, c.max_current_a) for c in config.circuits] == [("garage-b", 32)]
    charger = config.chargers[0]
    assert (charger.circuit, charger.phases, charger.phase_l1, charger.priority) == (
        "garage-b", 3, "L2", 0)


def test_billing_meter_on_the_charger_bus_loads() -> None:
    config = parse(MINIMAL.replace("    host: 10.0.0.21\n", """\
    serial: /dev/ttyUSB0
    unit: 1
    meter: {model: eastron-sdm630, serial: /dev/ttyUSB0, unit: 3}
"""))
    meter = config.chargers[0].meter
    assert meter is not None
    assert (meter.model, meter.transport, meter.serial, meter.unit, meter.port) == (
        "eastron-sdm630", "rtu", "/dev/ttyUSB0", 3, None)


def test_defaults() -> None:
    config = parse(MINIMAL)
    assert config.data_dir == Path("/var/lib/edge-agent")
    assert config.log_level == "INFO"
    cloud = config.cloud
    assert (cloud.port, cloud.topic_prefix, cloud.tls, cloud.username, cloud.password_file) == (
        1883, "edge/v1", None, None, None)
    assert (cloud.keepalive_s, cloud.ack_timeout_s, cloud.reconnect_max_s, cloud.session_expiry_s) == (
        30, 60, 60, 86400)
    auth = config.authorization
    assert (auth.offline_unknown, auth.online_timeout_s, auth.connect_timeout_s, auth.debounce_s) == (
        "reject", 3, 60, 2.0)
    sessions = config.sessions
    assert (sessions.meter_values_interval_s, sessions.poll_interval_s, sessions.status_heartbeat_s) == (
        60, 1.0, 10)
    charger = config.chargers[0]
    assert (charger.transport, charger.port, charger.unit, charger.max_current_a) == ("tcp", 502, None, None)
    assert (charger.timeout_s, charger.retries, charger.failsafe_current_a) == (1.0, 1, None)
    assert (charger.circuit, charger.phases, charger.phase_l1, charger.priority, charger.meter) == (
        None, 3, "L1", 0, None)
    assert config.readers == ()
    assert config.topic_root() == "edge/v1/gw-1"


def test_cloud_port_defaults_to_8883_with_tls() -> None:
    with_tls = MINIMAL.replace("  host: localhost\n", "  host: localhost\n  tls: {ca_file: /etc/ca.pem}\n")
    assert parse(with_tls).cloud.port == 8883
    explicit = with_tls.replace("  host: localhost\n", "  host: localhost\n  port: 18883\n")
    assert parse(explicit).cloud.port == 18883


def test_empty_sections_mean_defaults() -> None:
    config = parse(MINIMAL + "authorization:\nsessions:\nreaders:\n")
    assert config.authorization.online_timeout_s == 3
    assert config.readers == ()


def test_custom_topic_prefix_in_topic_root() -> None:
    config = parse(MINIMAL.replace("  host: localhost\n", "  host: localhost\n  topic_prefix: acme/edge\n"))
    assert config.topic_root() == "acme/edge/gw-1"


def test_yaml_merge_keys_are_applied() -> None:
    config = parse(MINIMAL + '''\
  - <<: &bus {model: heidelberg-energy-control, serial: /dev/ttyUSB0, baudrate: 19200}
    evse_id: "2"
    unit: 1
  - <<: *bus
    evse_id: "3"
    unit: 2
''')
    assert [(c.evse_id, c.serial, c.baudrate, c.unit) for c in config.chargers[1:]] == [
        ("2", "/dev/ttyUSB0", 19200, 1), ("3", "/dev/ttyUSB0", 19200, 2)]


def test_config_is_frozen() -> None:
    config = parse(MINIMAL)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.gateway_id = "other"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.chargers[0].unit = 3  # type: ignore[misc]


# --------------------------------------------------------------------------- model names


def test_models_come_from_drivers_modbus_when_not_given(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = types.ModuleType("drivers.modbus")
    fake.available_models = lambda: ["only-this-one"]  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "drivers.modbus", fake)
    issue = only_issue(MINIMAL, known_models=None)
    assert (issue.path, issue.line) == ("chargers[0].model", line_of(MINIMAL, "model: bender"))
    assert "unknown charger model 'bender-cc613'" in issue.message
    assert "only-this-one" in issue.message
    assert parse(MINIMAL.replace("bender-cc613", "only-this-one"), known_models=None)


def test_models_fall_back_to_contract_names_without_drivers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "drivers.modbus", None)  # makes the import fail
    assert parse(CONTRACT_EXAMPLE, known_models=None).chargers[1].model == "heidelberg-energy-control"
    issue = only_issue(MINIMAL.replace("bender-cc613", "acme-9000"), known_models=None)
    assert issue.path == "chargers[0].model"


def test_unknown_model_suggests_the_closest() -> None:
    text = MINIMAL.replace("bender-cc613", "bender-cc631")
    assert_issue(text, "chargers[0].model", "model:", "unknown charger model 'bender-cc631'",
                 "did you mean 'bender-cc613'?")


def test_unknown_meter_model() -> None:
    text = CONTRACT_LOAD_MANAGEMENT.replace("eastron-sdm630", "eastron-sdm999")
    assert_issue(text, "site.meter.model", "eastron-sdm999", "unknown meter model 'eastron-sdm999'")


# --------------------------------------------------------------------------- errors: one per class


def test_choice_error_names_path_line_and_value() -> None:
    text = CONTRACT_EXAMPLE.replace("baudrate: 19200", 'baudrate: "fast"')
    issue = assert_issue(text, "chargers[1].baudrate", "baudrate:", "must be one of 1200",
                         "115200", 'got "fast"')
    assert str(issue) == f"chargers[1].baudrate (line {issue.line}): {issue.message}"


def test_unknown_key_suggests_the_closest() -> None:
    text = MINIMAL.replace("  host: localhost\n", "  host: localhost\n  prot: 1884\n")
    assert_issue(text, "cloud.prot", "prot:", "unknown key 'prot' (did you mean 'port'?)")


def test_unknown_key_without_close_match_lists_the_keys() -> None:
    text = MINIMAL + "wibble: blue\n"
    assert_issue(text, "wibble", "wibble:", "unknown key 'wibble'", "gateway_id", "chargers")


def test_wrong_type() -> None:
    text = MINIMAL.replace("  host: localhost\n", "  host: localhost\n  keepalive_s: thirty\n")
    assert_issue(text, "cloud.keepalive_s", "keepalive_s", "must be an integer", 'got "thirty"')


def test_wrong_type_mapping_instead_of_list() -> None:
    text = MINIMAL + "readers:\n  driver: rdm6300\n"
    assert_issue(text, "readers", "driver: rdm6300", "must be a list", "got a mapping")


def test_out_of_range() -> None:
    text = MINIMAL + "    max_current_a: 100\n"
    assert_issue(text, "chargers[0].max_current_a", "max_current_a", "between 6 and 80", "got 100")


def test_out_of_range_float() -> None:
    text = MINIMAL + "authorization:\n  online_timeout_s: 0.01\n"
    assert_issue(text, "authorization.online_timeout_s", "online_timeout_s", "between 0.1 and 60",
                 "got 0.01")


def test_failsafe_current_between_0_and_6_is_rejected() -> None:
    text = MINIMAL + "    failsafe_current_a: 3\n"
    assert_issue(text, "chargers[0].failsafe_current_a", "failsafe", "0 or between 6 and 80")
    assert parse(MINIMAL + "    failsafe_current_a: 0\n").chargers[0].failsafe_current_a == 0


def test_evse_id_as_number_says_to_quote_it() -> None:
    text = MINIMAL.replace('evse_id: "1"', "evse_id: 1")
    assert_issue(text, "chargers[0].evse_id", "evse_id", "must be a string", 'quotes: "1"')


def test_evse_id_must_be_a_topic_level() -> None:
    text = MINIMAL.replace('evse_id: "1"', 'evse_id: "1/2"')
    assert_issue(text, "chargers[0].evse_id", "evse_id", "one MQTT topic level")


def test_unquoted_evse_id_is_one_error_even_when_a_reader_names_it() -> None:
    text = MINIMAL.replace('evse_id: "1"', "evse_id: 1") + (
        'readers:\n  - driver: rdm6300\n    port: /dev/ttyAMA0\n    evse_id: "1"\n')
    assert only_issue(text).path == "chargers[0].evse_id"


def test_duplicate_evse_id() -> None:
    text = MINIMAL + '''\
  - evse_id: "1"
    model: bender-cc613
    host: 10.0.0.22
'''
    issue = only_issue(text)
    assert (issue.path, issue.line) == ("chargers[1].evse_id", 9)
    assert "duplicate evse_id '1'" in issue.message
    assert "chargers[0], line 6" in issue.message


def test_duplicate_yaml_key() -> None:
    text = MINIMAL + "    host: 10.0.0.99\n"
    issue = only_issue(text)
    assert (issue.path, issue.line) == ("chargers[0].host", 9)
    assert "duplicate key 'host' (first at line 8)" in issue.message


def test_charger_with_host_and_serial() -> None:
    text = MINIMAL + "    serial: /dev/ttyUSB0\n"
    assert_issue(text, "chargers[0].serial", "serial:", "either host", "not both")


def test_charger_with_neither_host_nor_serial() -> None:
    text = MINIMAL.replace("    host: 10.0.0.21\n", "")
    assert_issue(text, "chargers[0]", 'evse_id: "1"', "needs host", "or serial")


def test_tcp_port_with_serial() -> None:
    text = MINIMAL.replace("    host: 10.0.0.21\n", "    serial: /dev/ttyUSB0\n    port: 502\n")
    assert_issue(text, "chargers[0].port", "port: 502", "needs host")


def test_serial_setting_without_serial() -> None:
    text = MINIMAL + "    parity: E\n"
    assert_issue(text, "chargers[0].parity", "parity", "needs serial")


def test_rtu_over_tcp_needs_host() -> None:
    text = MINIMAL.replace("    host: 10.0.0.21\n", "    serial: /dev/ttyUSB0\n    transport: rtu-over-tcp\n")
    assert_issue(text, "chargers[0].transport", "transport", "needs host")
    ok = parse(MINIMAL + "    transport: rtu-over-tcp\n    unit: 3\n").chargers[0]
    assert (ok.transport, ok.host, ok.port, ok.unit) == ("rtu-over-tcp", "10.0.0.21", 502, 3)


def test_reader_pointing_at_unknown_evse() -> None:
    text = MINIMAL + 'readers:\n  - driver: rdm6300\n    port: /dev/ttyAMA0\n    evse_id: "9"\n'
    assert_issue(text, "readers[0].evse_id", 'evse_id: "9"', "no charger has evse_id '9'")


def test_two_readers_on_one_port() -> None:
    text = MINIMAL + '''\
readers:
  - driver: rdm6300
    port: /dev/ttyAMA0
  - driver: rdm6300
    port: /dev/ttyAMA0
'''
    issue = only_issue(text)
    assert (issue.path, issue.line) == ("readers[1].port", 13)
    assert "already used by readers[0] (line 11)" in issue.message


def test_reader_on_the_modbus_bus() -> None:
    text = CONTRACT_EXAMPLE.replace("port: /dev/ttyAMA0", "port: /dev/ttyUSB0")
    assert_issue(text, "readers[0].port", "port: /dev/ttyUSB0", "Modbus bus of chargers[1]")


def test_reader_driver_needs_its_own_key() -> None:
    missing_port = MINIMAL + "readers:\n  - driver: rdm6300\n"
    assert_issue(missing_port, "readers[0].port", "driver: rdm6300", "required for driver rdm6300")
    wrong_key = MINIMAL + "readers:\n  - driver: pn532\n    device: usb\n    port: /dev/ttyAMA0\n"
    assert_issue(wrong_key, "readers[0].port", "port: /dev/ttyAMA0", "not used by driver pn532")


def test_unknown_reader_driver() -> None:
    text = MINIMAL + "readers:\n  - driver: rdm630\n    port: /dev/ttyAMA0\n"
    assert_issue(text, "readers[0].driver", "driver", "must be one of rdm6300, pn532, hid",
                 "did you mean 'rdm6300'?")


@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n"])
def test_empty_file(text: str) -> None:
    assert str(only_issue(text)) == "the file is empty"


@pytest.mark.parametrize(("text", "what"), [("- a\n- b\n", "a list"), ("just words\n", '"just words"')])
def test_top_level_not_a_mapping(text: str, what: str) -> None:
    issue = only_issue(text)
    assert (issue.path, issue.line) == ("", 1)
    assert issue.message == f"the top level must be a mapping of keys, got {what}"


def test_yaml_syntax_error_has_a_line() -> None:
    text = MINIMAL + "readers: [\n"
    issue = only_issue(text)
    assert issue.line is not None and issue.line >= 9
    assert issue.message.startswith("invalid YAML")


def test_invalid_timezone() -> None:
    text = MINIMAL.replace("Europe/Oslo", "Europe/Olso")
    assert_issue(text, "timezone", "timezone", 'unknown time zone "Europe/Olso"',
                 "did you mean 'Europe/Oslo'?")


@pytest.mark.parametrize("gateway_id", ["gw/1", "gw+1", "gw#1", "g" * 65, '""'])
def test_invalid_gateway_id(gateway_id: str) -> None:
    text = MINIMAL.replace("gateway_id: gw-1", f"gateway_id: {gateway_id}")
    issue = assert_issue(text, "gateway_id", "gateway_id")
    assert "topic level" in issue.message or "64 characters" in issue.message or "empty" in issue.message


def test_gateway_id_of_64_chars_is_fine() -> None:
    assert parse(MINIMAL.replace("gateway_id: gw-1", "gateway_id: " + "g" * 64)).gateway_id == "g" * 64


def test_missing_required_key() -> None:
    text = MINIMAL.replace("  host: localhost\n", "  port: 1883\n")
    assert_issue(text, "cloud.host", "port: 1883", "is required")


def test_missing_top_level_key_and_no_chargers() -> None:
    text = "gateway_id: gw-1\ntimezone: UTC\nchargers: []\n"
    found = {(i.path, i.line): i.message for i in issues(text)}
    assert found[("cloud", None)] == "is required but missing"
    assert "at least 1" in found[("chargers", 3)]


def test_tls_cert_without_key() -> None:
    text = MINIMAL.replace("  host: localhost\n", "  host: localhost\n  tls:\n    cert_file: /etc/gw.pem\n")
    assert_issue(text, "cloud.tls.key_file", "cert_file", "is required with cert_file")


def test_bad_topic_prefix() -> None:
    text = MINIMAL.replace("  host: localhost\n", "  host: localhost\n  topic_prefix: edge/v1/\n")
    assert_issue(text, "cloud.topic_prefix", "topic_prefix", "must not start or end with '/'")


def test_unknown_circuit() -> None:
    text = CONTRACT_LOAD_MANAGEMENT.replace("circuit: garage-b", "circuit: garage-c")
    assert_issue(text, "chargers[0].circuit", "circuit: garage-c", "unknown circuit 'garage-c'",
                 "did you mean 'garage-b'?")


def test_circuits_need_a_site() -> None:
    text = MINIMAL + "circuits:\n  - id: garage-b\n    max_current_a: 32\n"
    assert_issue(text, "circuits", "id: garage-b", "needs a site section")


def test_site_meter_needs_safe_current() -> None:
    text = CONTRACT_LOAD_MANAGEMENT.replace(
        "  safe_current_a: 32               # per phase for all chargers together while the site meter is silent\n",
        "")
    assert_issue(text, "site.safe_current_a", "max_current_a: 63", "required with a site meter")


def test_site_without_meter_defaults_safe_current_to_max() -> None:
    config = parse(MINIMAL + "site:\n  max_current_a: 40\n")
    assert config.site is not None and config.site.safe_current_a == 40


def test_three_phase_charger_on_single_phase_site() -> None:
    text = MINIMAL + "site:\n  max_current_a: 40\n  phases: 1\n"
    assert_issue(text, "chargers[0].phases", 'evse_id: "1"', "is 3 (the default) but site.phases is 1")


def test_two_devices_at_one_address() -> None:
    text = CONTRACT_EXAMPLE.replace("    unit: 1\n", "    unit: 1\n    meter: {model: eastron-sdm630, serial: /dev/ttyUSB0, unit: 1}\n")
    issue = only_issue(text)
    assert (issue.path, issue.line) == ("chargers[1].meter.unit", line_of(text, "meter: {"))
    assert "same serial /dev/ttyUSB0 and unit as chargers[1]" in issue.message


def test_one_serial_bus_one_baudrate() -> None:
    text = CONTRACT_EXAMPLE.replace(
        "    unit: 1\n", "    unit: 1\n    meter: {model: eastron-sdm630, serial: /dev/ttyUSB0, baudrate: 9600, unit: 3}\n")
    assert_issue(text, "chargers[1].meter.baudrate", "meter: {", "9600 differs from 19200")


def test_unreadable_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path / "missing.yaml", known_models=MODELS)
    assert "cannot read" in str(caught.value)


def test_load_config_reads_the_file(tmp_path: Path) -> None:
    path = tmp_path / "site.yaml"
    path.write_text(MINIMAL)
    config = load_config(path, known_models=MODELS)
    assert config.path == path
    assert config.chargers[0].host == "10.0.0.21"


# --------------------------------------------------------------------------- many errors at once


def test_all_errors_are_reported_in_file_order() -> None:
    text = '''\
gateway_id: gw/1
timezone: Mars/Olympus
cloud:
  host: localhost
  prot: 1884
chargers:
  - evse_id: 1
    model: bender-cc613
    host: 10.0.0.21
  - evse_id: "2"
    model: heidelberg-energy-control
    serial: /dev/ttyUSB0
    baudrate: fast
readers:
  - driver: rdm6300
    port: /dev/ttyAMA0
    evse_id: "3"
'''
    with pytest.raises(ConfigError) as caught:
        parse(text)
    error = caught.value
    assert [(i.path, i.line) for i in error.errors] == [
        ("gateway_id", 1),
        ("timezone", 2),
        ("cloud.prot", 5),
        ("chargers[0].evse_id", 7),
        ("chargers[1].baudrate", 13),
        ("readers[0].evse_id", 17),
    ]
    lines = str(error).splitlines()
    assert lines == [str(i) for i in error.errors]
    assert lines[4].startswith('chargers[1].baudrate (line 13): must be one of 1200, ')
    assert lines[4].endswith('got "fast"')
