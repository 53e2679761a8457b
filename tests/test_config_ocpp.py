"""The OCPP parts of the site config (contract/site-config.md): the `ocpp:` section and
`protocol: ocpp` chargers, read from real files with real certificates and password files."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

from edge_agent.config import (
    CHARGER_MODELS,
    OCPP_MODELS,
    ChargerBase,
    ChargerConfig,
    ConfigError,
    ConfigIssue,
    OcppChargerConfig,
    OcppConfig,
    OcppTlsConfig,
    SiteConfig,
    load_config,
)
from hardware_sim.certs import CertificateAuthority

HEAD = '''\
gateway_id: gw-0044
timezone: Europe/Oslo
cloud:
  host: mqtt.example.net
'''

# The contract's OCPP example (verbatim but for the file paths), a Modbus charger beside it.
FULL = HEAD + '''\
ocpp:                              # the gateway's local OCPP 1.6J central system
  host: 0.0.0.0                    # where its websocket server listens
  port: 8887                       # a charger connects to ws://GATEWAY:8887/{charge_point_id}
  tls:                             # optional: wss (OCPP security profile 2)
    cert_file: @DIR@/ocpp.pem
    key_file: @DIR@/ocpp.key
  heartbeat_s: 300                 # the interval given in BootNotification.conf
chargers:
  - evse_id: "1"
    model: bender-cc613
    host: 10.0.0.21
    max_current_a: 32
  - evse_id: "3"
    protocol: ocpp                 # default: modbus
    model: zaptec-go               # an OCPP quirk map shipped in drivers/ (generic-ocpp16 always exists)
    charge_point_id: ZAP049123     # the last segment of the URL the charger connects to
    connector: 1                   # default 1
    password_file: @DIR@/ocpp-ZAP049123.secret  # HTTP basic auth (security profile 1/2)
    max_current_a: 16
'''

# One OCPP charger, no TLS, no password: the base the error cases change.
PLAIN = HEAD + '''\
ocpp:
  port: 9000
chargers:
  - evse_id: "1"
    model: bender-cc613
    host: 10.0.0.21
  - evse_id: "2"
    protocol: ocpp
    model: generic-ocpp16
    charge_point_id: CP-2
'''


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    directory = tmp_path_factory.mktemp("pki")
    ca = CertificateAuthority.create(directory / "ca", name="ocpp-ca")
    server, other = ca.issue_server("ocpp-server"), ca.issue_server("other-server")
    return {"cert": server.cert, "key": server.key, "other_key": other.key}


@pytest.fixture()
def files(tmp_path: Path, pki: dict[str, Path]) -> Path:
    """tmp_path with ocpp.pem, ocpp.key (0600) and ocpp-ZAP049123.secret (0600) in it."""
    (tmp_path / "ocpp.pem").write_bytes(pki["cert"].read_bytes())
    key = tmp_path / "ocpp.key"
    key.write_bytes(pki["key"].read_bytes())
    key.chmod(0o600)
    secret = tmp_path / "ocpp-ZAP049123.secret"
    secret.write_text("  zap-s3cret\n")
    secret.chmod(0o600)
    return tmp_path


def write(directory: Path, text: str) -> Path:
    path = directory / "site.yaml"
    path.write_text(text.replace("@DIR@", str(directory)), encoding="utf-8")
    return path


def load(directory: Path, text: str, **kwargs: object) -> SiteConfig:
    return load_config(write(directory, text), known_models=CHARGER_MODELS, **kwargs)  # type: ignore[arg-type]


def lines_of(text: str, needle: str) -> list[int]:
    return [n for n, line in enumerate(text.splitlines(), 1) if needle in line]


def line_of(text: str, needle: str) -> int:
    """1-based line of the only line of `text` that contains `needle`."""
    found = lines_of(text, needle)
    assert len(found) == 1, (needle, found)
    return found[0]


def issues(directory: Path, text: str, **kwargs: object) -> list[ConfigIssue]:
    with pytest.raises(ConfigError) as caught:
        load(directory, text, **kwargs)
    return caught.value.errors


def assert_issue(directory: Path, text: str, path: str, needle: str, *parts: str,
                 **kwargs: object) -> ConfigIssue:
    """Exactly one issue, at `path` on the line containing `needle`, mentioning every part."""
    found = issues(directory, text, **kwargs)
    assert len(found) == 1, [str(i) for i in found]
    issue = found[0]
    assert (issue.path, issue.line) == (path, line_of(text, needle)), str(issue)
    for part in parts:
        assert part in issue.message, str(issue)
    assert str(issue).startswith(f"{path} (line {issue.line}): ")
    return issue


# --------------------------------------------------------------------------- what loads


def test_contract_example_with_a_modbus_charger_beside_it(files: Path) -> None:
    config = load(files, FULL)
    assert config.ocpp == OcppConfig(host="0.0.0.0", port=8887, heartbeat_s=300, tls=OcppTlsConfig(
        cert_file=files / "ocpp.pem", key_file=files / "ocpp.key"))
    modbus, ocpp = config.chargers
    assert type(modbus) is ChargerConfig and type(ocpp) is OcppChargerConfig
    assert isinstance(modbus, ChargerBase) and isinstance(ocpp, ChargerBase)
    assert (modbus.protocol, modbus.model, modbus.host, modbus.port, modbus.max_current_a) == (
        "modbus", "bender-cc613", "10.0.0.21", 502, 32)
    assert (ocpp.evse_id, ocpp.protocol, ocpp.model, ocpp.charge_point_id, ocpp.connector) == (
        "3", "ocpp", "zaptec-go", "ZAP049123", 1)
    assert ocpp.password_file == files / "ocpp-ZAP049123.secret"
    assert ocpp.password == "zap-s3cret"  # the file's content, stripped
    assert "zap-s3cret" not in repr(ocpp) and "zap-s3cret" not in repr(config)
    assert ocpp.max_current_a == 16
    assert (ocpp.phases, ocpp.phase_l1, ocpp.priority, ocpp.circuit, ocpp.failsafe_current_a) == (
        3, "L1", 0, None, None)


def test_defaults(tmp_path: Path) -> None:
    text = PLAIN.replace("  port: 9000\n", "").replace("ocpp:\n", "ocpp: {}\n")
    config = load(tmp_path, text)
    assert config.ocpp == OcppConfig(host="0.0.0.0", port=8887, tls=None, heartbeat_s=300)
    charger = config.chargers[1]
    assert isinstance(charger, OcppChargerConfig)
    assert (charger.connector, charger.password_file, charger.password) == (1, None, None)
    assert load(tmp_path, PLAIN).ocpp == OcppConfig(port=9000)


def test_an_empty_ocpp_key_is_the_defaults(tmp_path: Path) -> None:
    text = PLAIN.replace("  port: 9000\n", "  # port: 9000\n")
    assert load(tmp_path, text).ocpp == OcppConfig(host="0.0.0.0", port=8887, tls=None, heartbeat_s=300)


def test_no_ocpp_section_is_none_and_protocol_defaults_to_modbus(tmp_path: Path) -> None:
    text = HEAD + 'chargers:\n  - evse_id: "1"\n    model: bender-cc613\n    host: 10.0.0.21\n'
    config = load(tmp_path, text)
    assert config.ocpp is None
    (charger,) = config.chargers
    assert type(charger) is ChargerConfig and charger.protocol == "modbus"
    explicit = load(tmp_path, text + "    protocol: modbus\n").chargers[0]
    assert type(explicit) is ChargerConfig and explicit == charger


def test_every_setting(tmp_path: Path) -> None:
    text = HEAD + '''\
ocpp:
  host: 192.168.7.1
  port: 443
  heartbeat_s: 10
site:
  max_current_a: 40
circuits:
  - id: garage
    max_current_a: 25
chargers:
  - evse_id: "5"
    protocol: ocpp
    model: easee-home
    charge_point_id: "EH 123_äø"
    connector: 9
    max_current_a: 20
    failsafe_current_a: 6
    circuit: garage
    phases: 1
    phase_l1: L3
    priority: -9
readers:
  - driver: rdm6300
    port: /dev/ttyAMA0
    evse_id: "5"
'''
    config = load(tmp_path, text)
    assert config.ocpp == OcppConfig(host="192.168.7.1", port=443, heartbeat_s=10)
    (charger,) = config.chargers
    assert charger == OcppChargerConfig(
        evse_id="5", protocol="ocpp", model="easee-home", charge_point_id="EH 123_äø", connector=9,
        max_current_a=20.0, failsafe_current_a=6.0, circuit="garage", phases=1, phase_l1="L3", priority=-9)
    assert config.readers[0].evse_id == "5"  # a gateway reader may serve an OCPP EVSE


def test_the_ocpp_models_come_from_drivers_ocpp(tmp_path: Path) -> None:
    from drivers.ocpp import available_quirk_models

    assert "generic-ocpp16" in OCPP_MODELS
    assert set(OCPP_MODELS) <= set(available_quirk_models())
    for model in available_quirk_models():
        charger = load(tmp_path, PLAIN.replace("generic-ocpp16", model)).chargers[1]
        assert charger.model == model
    # Given explicitly, only those count.
    issue = assert_issue(tmp_path, PLAIN, "chargers[1].model", "generic-ocpp16",
                         "unknown OCPP charger model 'generic-ocpp16'", "(known: acme-1, acme-2)",
                         known_ocpp_models=["acme-2", "acme-1"])
    assert issue.message.endswith("(known: acme-1, acme-2)")


def test_without_drivers_ocpp_the_shipped_names_count(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "drivers.ocpp", None)  # makes the import fail
    assert load(tmp_path, PLAIN.replace("generic-ocpp16", "zaptec-pro")).chargers[1].model == "zaptec-pro"
    assert_issue(tmp_path, PLAIN.replace("generic-ocpp16", "acme-9"), "chargers[1].model", "acme-9",
                 "unknown OCPP charger model 'acme-9'", "generic-ocpp16", "zaptec-go")


# --------------------------------------------------------------------------- the ocpp: section


@pytest.mark.parametrize(("old", "new", "path", "parts"), [
    ("  port: 9000", "  port: 0", "ocpp.port", ("between 1 and 65535", "got 0")),
    ("  port: 9000", "  port: 65536", "ocpp.port", ("between 1 and 65535", "got 65536")),
    ("  port: 9000", '  port: "8887"', "ocpp.port", ("integer",)),
    ("  port: 9000", "  heartbeat_s: 9", "ocpp.heartbeat_s", ("between 10 and 86400", "got 9")),
    ("  port: 9000", "  heartbeat_s: 86401", "ocpp.heartbeat_s", ("between 10 and 86400",)),
    ("  port: 9000", "  heartbeat_s: 30.5", "ocpp.heartbeat_s", ("integer", "30.5")),
    ("  port: 9000", '  host: ""', "ocpp.host", ("must not be empty",)),
    ("  port: 9000", "  prot: 9000", "ocpp.prot", ("unknown key 'prot'", "did you mean 'port'?")),
    ("  port: 9000", "  tls: yes", "ocpp.tls", ("must be a mapping",)),
])
def test_ocpp_section_errors(tmp_path: Path, old: str, new: str, path: str, parts: tuple[str, ...]) -> None:
    text = PLAIN.replace(old, new)
    assert_issue(tmp_path, text, path, new.strip(), *parts)


def test_ocpp_section_must_be_a_mapping(tmp_path: Path) -> None:
    text = PLAIN.replace("ocpp:\n  port: 9000\n", "ocpp: 8887\n")
    assert_issue(tmp_path, text, "ocpp", "ocpp: 8887", "must be a mapping of keys")


def test_tls_needs_both_files(files: Path) -> None:
    # A missing key is reported at its mapping, whose line is that of the mapping's first key.
    text = FULL.replace("    key_file: @DIR@/ocpp.key\n", "")
    assert_issue(files, text, "ocpp.tls.key_file", "cert_file:", "is required but missing")
    text = FULL.replace("    cert_file: @DIR@/ocpp.pem\n", "")
    assert_issue(files, text, "ocpp.tls.cert_file", "key_file:", "is required but missing")
    text = FULL.replace("    key_file: @DIR@/ocpp.key\n", "    key_file: @DIR@/ocpp.key\n    ca_file: x\n")
    assert_issue(files, text, "ocpp.tls.ca_file", "ca_file: x", "unknown key 'ca_file'")


def test_tls_files_must_exist(files: Path) -> None:
    (files / "ocpp.pem").unlink()
    issue = assert_issue(files, FULL, "ocpp.tls.cert_file", "cert_file:", f"cannot read {files / 'ocpp.pem'}",
                         "No such file")
    (files / "ocpp.key").unlink()
    found = issues(files, FULL)
    assert [(i.path, i.line) for i in found] == [
        ("ocpp.tls.cert_file", issue.line), ("ocpp.tls.key_file", issue.line + 1)]


def test_tls_cert_must_be_a_file(files: Path) -> None:
    text = FULL.replace("@DIR@/ocpp.pem", "@DIR@")
    assert_issue(files, text, "ocpp.tls.cert_file", "cert_file:", "is not a regular file")


def test_tls_key_must_be_private(files: Path) -> None:
    (files / "ocpp.key").chmod(0o640)
    assert_issue(files, FULL, "ocpp.tls.key_file", "key_file:", "has mode 0640", "chmod 600")


def test_tls_cert_must_go_with_its_key(files: Path, pki: dict[str, Path]) -> None:
    (files / "ocpp.key").write_bytes(pki["other_key"].read_bytes())
    assert_issue(files, FULL, "ocpp.tls.cert_file", "cert_file:", f"cannot use {files / 'ocpp.pem'} with")


def test_tls_cert_must_be_a_certificate(files: Path) -> None:
    (files / "ocpp.pem").write_text("not a certificate\n")
    assert_issue(files, FULL, "ocpp.tls.cert_file", "cert_file:", "cannot use")


# --------------------------------------------------------------------------- protocol: ocpp chargers


def test_ocpp_charger_needs_the_ocpp_section(tmp_path: Path) -> None:
    text = PLAIN.replace("ocpp:\n  port: 9000\n", "")
    assert_issue(tmp_path, text, "chargers[1].protocol", "protocol: ocpp", "needs the ocpp: section")


def test_ocpp_section_errors_do_not_also_say_it_is_missing(tmp_path: Path) -> None:
    assert [i.path for i in issues(tmp_path, PLAIN.replace("port: 9000", "port: -1"))] == ["ocpp.port"]


def test_unknown_protocol(tmp_path: Path) -> None:
    text = PLAIN.replace('    model: bender-cc613\n', '    model: bender-cc613\n    protocol: sunspec\n')
    assert_issue(tmp_path, text, "chargers[0].protocol", "sunspec", "must be one of modbus, ocpp",
                 'got "sunspec"')


@pytest.mark.parametrize("value", ["OCPP", "ocpp1.6", "ocpp-2.0"])
def test_a_misspelt_ocpp_is_refused_and_the_rest_checked_as_ocpp(tmp_path: Path, value: str) -> None:
    # No "needs host or serial", no "charge_point_id is an OCPP setting": only the protocol.
    text = PLAIN.replace("    protocol: ocpp\n", f"    protocol: {value}\n")
    assert_issue(tmp_path, text, "chargers[1].protocol", f"protocol: {value}", "must be one of modbus, ocpp",
                 f'got "{value}"')


@pytest.mark.parametrize(("key", "value"), [
    ("host", "10.0.0.9"), ("port", "502"), ("unit", "1"), ("serial", "/dev/ttyUSB0"), ("transport", "tcp"),
    ("baudrate", "9600"), ("parity", "E"), ("stopbits", "1"), ("timeout_s", "2"), ("retries", "3"),
    ("failsafe_timeout_s", "60"), ("meter", "{model: eastron-sdm630, host: 10.0.0.9}"),
])
def test_modbus_keys_on_an_ocpp_charger(tmp_path: Path, key: str, value: str) -> None:
    text = PLAIN + f"    {key}: {value}\n"
    assert_issue(tmp_path, text, f"chargers[1].{key}", f"    {key}: {value}",
                 "is a Modbus setting", "protocol: ocpp")


@pytest.mark.parametrize(("key", "value"), [("charge_point_id", "CP-9"), ("password_file", "/etc/x.secret")])
def test_ocpp_keys_on_a_modbus_charger(tmp_path: Path, key: str, value: str) -> None:
    text = PLAIN.replace("    host: 10.0.0.21\n", f"    host: 10.0.0.21\n    {key}: {value}\n")
    assert_issue(tmp_path, text, f"chargers[0].{key}", f"{key}: {value}", "is an OCPP setting",
                 "add protocol: ocpp")


def test_unknown_key_on_an_ocpp_charger(tmp_path: Path) -> None:
    assert_issue(tmp_path, PLAIN + "    password: hunter2\n", "chargers[1].password", "password: hunter2",
                 "unknown key 'password'", "did you mean 'password_file'?")


def test_unknown_ocpp_model_lists_the_known(tmp_path: Path) -> None:
    from drivers.ocpp import available_quirk_models

    text = PLAIN.replace("generic-ocpp16", "zaptec-goo")
    issue = assert_issue(tmp_path, text, "chargers[1].model", "zaptec-goo",
                         "unknown OCPP charger model 'zaptec-goo'", "did you mean 'zaptec-go'?")
    assert issue.message.endswith(f"(known: {', '.join(sorted(available_quirk_models()))})")


def test_a_modbus_model_under_protocol_ocpp(tmp_path: Path) -> None:
    text = PLAIN.replace("generic-ocpp16", "alfen-ng9xx")
    assert_issue(tmp_path, text, "chargers[1].model", "alfen-ng9xx",
                 "unknown OCPP charger model 'alfen-ng9xx'", "is a Modbus charger", "leave out protocol: ocpp")


def test_an_ocpp_model_without_protocol_ocpp(tmp_path: Path) -> None:
    text = PLAIN.replace("bender-cc613", "easee-home")
    assert_issue(tmp_path, text, "chargers[0].model", "easee-home",
                 "unknown charger model 'easee-home'", "is an OCPP charger", "add protocol: ocpp")


def test_charge_point_id_is_required(tmp_path: Path) -> None:
    text = PLAIN.replace("    charge_point_id: CP-2\n", "")
    issue = assert_issue(tmp_path, text, "chargers[1].charge_point_id", '- evse_id: "2"', "is required")
    assert issue.message == "is required but missing"


@pytest.mark.parametrize(("value", "part"), [
    ('""', "must not be empty"),
    ('"  "', "must not be empty"),
    ("site/CP-2", "no '/'"),
    ("/CP-2", "no '/'"),
    ('"CP-2 "', "white space"),
    ('"CP\\t2"', "control characters"),
    ("12345", 'put it in quotes: "12345"'),
])
def test_charge_point_id_values(tmp_path: Path, value: str, part: str) -> None:
    text = PLAIN.replace("charge_point_id: CP-2", f"charge_point_id: {value}")
    assert_issue(tmp_path, text, "chargers[1].charge_point_id", "charge_point_id:", part)


def test_charge_point_id_is_unique_per_connector(tmp_path: Path) -> None:
    text = PLAIN + '''\
  - evse_id: "3"
    protocol: ocpp
    model: zaptec-go
    charge_point_id: CP-2
'''
    first, second = lines_of(text, "charge_point_id: CP-2")
    (issue,) = issues(tmp_path, text)
    assert (issue.path, issue.line) == ("chargers[2].charge_point_id", second)
    assert issue.message == (f"duplicate charge_point_id 'CP-2' with connector 1 (first at chargers[1], line "
                             f"{first}); another connector of the same charge point needs its own connector number")


def test_two_connectors_of_one_charge_point_are_two_evses(tmp_path: Path) -> None:
    text = PLAIN + '''\
  - evse_id: "3"
    protocol: ocpp
    model: generic-ocpp16
    charge_point_id: CP-2
    connector: 2
'''
    config = load(tmp_path, text)
    ocpp = [c for c in config.chargers if isinstance(c, OcppChargerConfig)]
    assert [(c.evse_id, c.charge_point_id, c.connector) for c in ocpp] == [("2", "CP-2", 1), ("3", "CP-2", 2)]


def test_connectors_of_one_charge_point_share_its_model(tmp_path: Path) -> None:
    text = PLAIN + '''\
  - evse_id: "3"
    protocol: ocpp
    model: easee-home
    charge_point_id: CP-2
    connector: 2
'''
    (issue,) = issues(tmp_path, text)
    assert issue.path == "chargers[2].model"
    assert issue.message.startswith("model differs from chargers[1] (line ")
    assert issue.message.endswith("the same charge point 'CP-2'")


def test_evse_ids_are_unique_across_protocols(tmp_path: Path) -> None:
    text = PLAIN.replace('evse_id: "2"', 'evse_id: "1"')
    first, second = lines_of(text, 'evse_id: "1"')
    (issue,) = issues(tmp_path, text)
    assert (issue.path, issue.line) == ("chargers[1].evse_id", second)
    assert issue.message == f"duplicate evse_id '1' (first at chargers[0], line {first})"


@pytest.mark.parametrize("value", ["0", "10", "-1"])
def test_connector_range(tmp_path: Path, value: str) -> None:
    text = PLAIN + f"    connector: {value}\n"
    assert_issue(tmp_path, text, "chargers[1].connector", f"connector: {value}", "between 1 and 9")


def test_common_settings_are_checked_on_ocpp_chargers_too(tmp_path: Path) -> None:
    assert_issue(tmp_path, PLAIN + "    max_current_a: 100\n", "chargers[1].max_current_a", "max_current_a",
                 "between 6 and 80")
    assert_issue(tmp_path, PLAIN + "    max_current_a: 10\n    failsafe_current_a: 16\n",
                 "chargers[1].failsafe_current_a", "failsafe_current_a", "must not exceed max_current_a (10)")
    assert_issue(tmp_path, PLAIN + "    priority: 10\n", "chargers[1].priority", "priority", "between -9 and 9")
    assert_issue(tmp_path, PLAIN + '    evse_id: "x"\n', "chargers[1].evse_id", 'evse_id: "x"', "duplicate key")


# --------------------------------------------------------------------------- password_file


def test_password_file_missing(files: Path) -> None:
    (files / "ocpp-ZAP049123.secret").unlink()
    assert_issue(files, FULL, "chargers[1].password_file", "password_file:", "cannot read",
                 "ocpp-ZAP049123.secret", "No such file")


@pytest.mark.parametrize("content", ["", "\n", "  \r\n\t\n"])
def test_password_file_empty(files: Path, content: str) -> None:
    (files / "ocpp-ZAP049123.secret").write_text(content)
    assert_issue(files, FULL, "chargers[1].password_file", "password_file:", "is empty")


def test_password_file_must_be_private(files: Path) -> None:
    (files / "ocpp-ZAP049123.secret").chmod(0o644)
    assert_issue(files, FULL, "chargers[1].password_file", "password_file:", "has mode 0644", "chmod 600")


def test_password_file_not_a_file(files: Path) -> None:
    assert_issue(files, FULL.replace("@DIR@/ocpp-ZAP049123.secret", "@DIR@"), "chargers[1].password_file",
                 "password_file:", "is not a regular file")


def test_password_file_not_text(files: Path) -> None:
    (files / "ocpp-ZAP049123.secret").write_bytes(b"\xff\xfe\x00")
    assert_issue(files, FULL, "chargers[1].password_file", "password_file:", "not UTF-8 text")


def test_password_is_read_at_load_time(files: Path) -> None:
    path = write(files, FULL)
    secret = files / "ocpp-ZAP049123.secret"
    secret.write_text("first\n")
    config = load_config(path, known_models=CHARGER_MODELS)
    secret.write_text("second\n")
    charger = config.chargers[1]
    assert isinstance(charger, OcppChargerConfig) and charger.password == "first"


# --------------------------------------------------------------------------- across sections


def test_load_management_takes_ocpp_chargers(tmp_path: Path) -> None:
    text = PLAIN.replace("chargers:\n", "site:\n  max_current_a: 63\n  phases: 1\nchargers:\n")
    text = text.replace("    host: 10.0.0.21\n", "    host: 10.0.0.21\n    phases: 1\n")
    found = issues(tmp_path, text)
    assert [(i.path, i.line, i.message) for i in found] == [
        ("chargers[1].phases", line_of(text, 'evse_id: "2"'), "is 3 (the default) but site.phases is 1; set phases: 1")]
    text += "    circuit: nowhere\n    phases: 1\n"
    assert_issue(tmp_path, text, "chargers[1].circuit", "circuit: nowhere", "unknown circuit 'nowhere'")


def test_readers_bind_to_ocpp_evses(tmp_path: Path) -> None:
    text = PLAIN + "readers:\n  - driver: pn532\n    device: usb\n    evse_id: \"2\"\n"
    assert load(tmp_path, text).readers[0].evse_id == "2"
    text = PLAIN + "readers:\n  - driver: pn532\n    device: usb\n    evse_id: \"9\"\n"
    assert_issue(tmp_path, text, "readers[0].evse_id", 'evse_id: "9"', "no charger has evse_id '9'")


def test_the_charger_reader_driver_is_not_for_an_ocpp_charger(tmp_path: Path) -> None:
    text = PLAIN + "readers:\n  - driver: charger\n    evse_id: \"2\"\n"
    assert_issue(tmp_path, text, "readers[0].driver", "driver: charger", "EVSE 2 is an OCPP charger",
                 "Authorize")
    assert load(tmp_path, PLAIN + "readers:\n  - driver: charger\n    evse_id: \"1\"\n").readers[0].evse_id == "1"


def test_an_ocpp_charger_is_on_no_modbus_bus(tmp_path: Path) -> None:
    # Same connector number as the Modbus charger's unit: no clash, as there is no bus.
    text = PLAIN.replace("    host: 10.0.0.21\n", "    host: 10.0.0.21\n    unit: 1\n") + "    connector: 1\n"
    assert len(load(tmp_path, text).chargers) == 2


def test_all_problems_at_once_in_file_order(tmp_path: Path) -> None:
    text = PLAIN.replace("ocpp:\n  port: 9000\n", "").replace("charge_point_id: CP-2", "charge_point_id: a/b")
    text += "    host: 10.0.0.3\n    connector: 0\n"
    assert [i.path for i in issues(tmp_path, text)] == [
        "chargers[1].protocol", "chargers[1].charge_point_id", "chargers[1].host", "chargers[1].connector"]


# --------------------------------------------------------------------------- the agent refuses them for now


def test_the_agent_does_not_drive_ocpp_chargers_yet(tmp_path: Path) -> None:
    from drivers.modbus import BusRegistry
    from edge_agent.agent import create_evse_charger
    from edge_agent.startup_checks import startup_issues

    config = load(tmp_path, PLAIN)
    with pytest.raises(ValueError, match="evse 2: protocol ocpp: OCPP chargers are not yet driven by the agent"):
        create_evse_charger(config.chargers[1], registry=BusRegistry(), plan=None, energy_dir=None)
    found = [i for i in startup_issues(config) if i.path.startswith("chargers")]
    assert [(i.path, i.line) for i in found] == [("chargers[1].protocol", line_of(PLAIN, "protocol: ocpp"))]
    assert "not yet driven by the agent" in found[0].message
