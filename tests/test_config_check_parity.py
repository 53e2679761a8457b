"""`edge-agent config check` refuses what `edge-agent run` refuses: every check that needs no
device and no network runs in both (secrets and TLS files, the load-management plan, what each
charger model takes), and both name the same keys. Real processes, real files, real certificates."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from edge_agent.cli import ExitCode
from hardware_sim.certs import CertificateAuthority


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    ca = CertificateAuthority.create(tmp_path_factory.mktemp("pki") / "ca", name="cloud-ca")
    return {"ca": ca, "gw": ca.issue_client("gw-parity")}


def good_files(tmp_path: Path, pki: dict[str, Any]) -> dict[str, Path]:
    files = {"ca": tmp_path / "ca.pem", "cert": tmp_path / "gw.pem", "key": tmp_path / "gw.key",
             "password": tmp_path / "mqtt-password", "lists_ca": tmp_path / "lists-ca.pem"}
    files["ca"].write_bytes(pki["ca"].cert.read_bytes())
    files["lists_ca"].write_bytes(pki["ca"].cert.read_bytes())
    files["cert"].write_bytes(pki["gw"].cert.read_bytes())
    files["key"].write_bytes(pki["gw"].key.read_bytes())
    files["password"].write_text("s3cret\n")
    files["key"].chmod(0o600)
    files["password"].chmod(0o600)
    return files


def config_text(tmp_path: Path, files: dict[str, Path], *, site: str = "", chargers: str | None = None,
                readers: str | None = None) -> str:
    default_chargers = """\
  - evse_id: "1"
    model: bender-cc613
    host: 127.0.0.1
    port: 1
    max_current_a: 16
  - evse_id: "2"
    model: heidelberg-energy-control
    serial: /dev/null
    max_current_a: 16
"""
    default_readers = """\
  - driver: charger
    evse_id: "1"
"""
    return f"""\
gateway_id: gw-parity
timezone: Europe/Oslo
data_dir: {tmp_path / 'data'}
cloud:
  host: 127.0.0.1
  port: 1
  username: gw-parity
  password_file: {files['password']}
  lists_ca_file: {files['lists_ca']}
  tls:
    ca_file: {files['ca']}
    cert_file: {files['cert']}
    key_file: {files['key']}
{site}chargers:
{default_chargers if chargers is None else chargers}readers:
{default_readers if readers is None else readers}"""


def alfen_with_failsafe(tmp_path: Path, files: dict[str, Path]) -> str:
    return config_text(tmp_path, files, chargers="""\
  - evse_id: "1"
    model: alfen-ng9xx
    host: 127.0.0.1
    port: 1
    failsafe_current_a: 8
""", readers="")


def current_beyond_the_model(tmp_path: Path, files: dict[str, Path]) -> str:
    return config_text(tmp_path, files, chargers="""\
  - evse_id: "1"
    model: heidelberg-energy-control
    serial: /dev/null
    max_current_a: 20
""", readers="")


def reader_the_model_lacks(tmp_path: Path, files: dict[str, Path]) -> str:
    return config_text(tmp_path, files, readers="""\
  - driver: charger
    evse_id: "2"
""")


def failsafe_over_the_site_budget(tmp_path: Path, files: dict[str, Path]) -> str:
    return config_text(tmp_path, files, site="site:\n  max_current_a: 20\n  safe_current_a: 10\n", chargers="""\
  - evse_id: "1"
    model: bender-cc613
    host: 127.0.0.1
    port: 1
    max_current_a: 16
    failsafe_current_a: 16
""")


def with_files(change: Any) -> Any:
    def make(tmp_path: Path, files: dict[str, Path]) -> str:
        change(files)
        return config_text(tmp_path, files)
    return make


CASES = [
    ("password file others may read", with_files(lambda f: f["password"].chmod(0o644)), "cloud.password_file",
     "has mode 0644"),
    ("password file missing", with_files(lambda f: f["password"].unlink()), "cloud.password_file", "cannot read"),
    ("CA file missing", with_files(lambda f: f["ca"].unlink()), "cloud.tls.ca_file", "no such file"),
    ("certificate missing", with_files(lambda f: f["cert"].unlink()), "cloud.tls.cert_file", "no such file"),
    ("key missing", with_files(lambda f: f["key"].unlink()), "cloud.tls.key_file", "cannot read"),
    ("key others may read", with_files(lambda f: f["key"].chmod(0o640)), "cloud.tls.key_file", "has mode 0640"),
    ("lists CA missing", with_files(lambda f: f["lists_ca"].unlink()), "cloud.lists_ca_file", "no such file"),
    ("fail-safe set on an Alfen", alfen_with_failsafe, "chargers[0].failsafe_current_a", "configured on the charger"),
    ("current beyond the model", current_beyond_the_model, "chargers[0].max_current_a", "outside 6.0..16.0"),
    ("built-in reader the model lacks", reader_the_model_lacks, "readers[0].driver", "has no card reader"),
    ("fail-safe over the site budget", failsafe_over_the_site_budget, "site", "alone exceed"),
]


def edge_agent(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "edge_agent", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)


def issues(stderr: str) -> list[str]:
    """The problems listed under the first line (which names the file and the verdict)."""
    return [line for line in stderr.splitlines()[1:] if line.strip()]


@pytest.mark.parametrize("what, make, key, words", CASES, ids=[c[0] for c in CASES])
def test_config_check_and_run_refuse_the_same_config_naming_the_key(tmp_path, pki, what, make, key, words):
    config = tmp_path / "site.yaml"
    config.write_text(make(tmp_path, good_files(tmp_path, pki)), encoding="utf-8")
    check, run = edge_agent("config", "check", str(config)), edge_agent("run", "--config", str(config))
    check_out, check_err = check.communicate(timeout=60)
    _run_out, run_err = run.communicate(timeout=60)
    assert check.returncode == ExitCode.CONFIG, (check_out, check_err)
    assert run.returncode == ExitCode.CONFIG, run_err
    named = [line for line in issues(check_err) if line.startswith(f"{key} (line ")]
    assert named and words in named[0], check_err
    assert "Traceback" not in check_err + run_err
    assert issues(check_err) == issues(run_err), (check_err, run_err)  # the same problems, the same words


def test_a_good_config_passes_both(tmp_path, pki):
    config = tmp_path / "site.yaml"
    config.write_text(config_text(tmp_path, good_files(tmp_path, pki),
                                  site="site:\n  max_current_a: 32\n"), encoding="utf-8")
    check, run = edge_agent("config", "check", str(config)), edge_agent("run", "--config", str(config))
    try:
        check_out, check_err = check.communicate(timeout=60)
        assert check.returncode == 0 and "OK" in check_out, check_err
        time.sleep(4)  # refusals come at once; a started agent keeps retrying the unreachable parts
        assert run.poll() is None, run.communicate()
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGTERM)
        run.communicate(timeout=30)
