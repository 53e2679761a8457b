"""scripts/install.sh into a fresh root: user, directories, permissions, venv, the unit
(checked by systemd-analyze verify), an upgrade that migrates the database and keeps its data, and a
downgrade refused before anything changes."""
import os
import shutil
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from edge_agent.store import SCHEMA_VERSION
from edge_agent.store._schema import MIGRATIONS

REPO = Path(__file__).resolve().parents[1]
INSTALL = REPO / "scripts" / "install.sh"
UNIT = REPO / "systemd" / "edge-agent.service"



@pytest.fixture(scope="module")
def wheelhouse(tmp_path_factory):
    """Wheels of the dependencies (and of the build backend) so the installer runs offline."""
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, src / name)
    for name in ("edge_agent", "drivers"):
        shutil.copytree(REPO / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
    wheels = tmp_path_factory.mktemp("wheelhouse")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--disable-pip-version-check", "-w", str(wheels),
                    str(src), "setuptools>=68", "wheel"], check=True, capture_output=True)
    for own in wheels.glob("edge_agent-*.whl"):
        own.unlink()  # the installer must build the checkout itself
    return wheels


def fresh_root(path: Path) -> Path:
    """What a Debian base has before edge-agent: users and groups (dialout, no input group) and
    systemd's own units, which systemd-analyze needs to resolve the unit's dependencies."""
    assert os.geteuid() == 0, "the installer creates users and chowns files: run the tests as root"
    (path / "etc").mkdir(parents=True)
    (path / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/bash\n")
    (path / "etc" / "group").write_text("root:x:0:\ndialout:x:20:\n")
    (path / "etc" / "shadow").write_text("root:*:19000:0:99999:7:::\n")
    (path / "etc" / "gshadow").write_text("root:*::\ndialout:*::\n")
    (path / "usr" / "lib" / "systemd").mkdir(parents=True)
    shutil.copytree("/usr/lib/systemd/system", path / "usr" / "lib" / "systemd" / "system", symlinks=True)
    return path


def install(root: Path, wheelhouse: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(INSTALL), "--root", str(root), "--no-systemctl", "--wheelhouse",
                           str(wheelhouse), *extra], capture_output=True, text=True, timeout=600)


def ids(root: Path) -> tuple[int, int, dict[str, list[str]]]:
    passwd = {line.split(":")[0]: line.split(":") for line in (root / "etc/passwd").read_text().splitlines()}
    groups = {line.split(":")[0]: line.split(":") for line in (root / "etc/group").read_text().splitlines()}
    members = {name: [m for m in fields[3].split(",") if m] for name, fields in groups.items()}
    return int(passwd["edge-agent"][2]), int(groups["edge-agent"][2]), members


def mode_owner(path: Path) -> tuple[int, int, int]:
    st = path.lstat()
    return stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid


@pytest.fixture(scope="module")
def installed(tmp_path_factory, wheelhouse):
    root = fresh_root(tmp_path_factory.mktemp("root") / "root")
    secret = tmp_path_factory.mktemp("secrets") / "mqtt-password"
    secret.write_text("s3cret\n")
    done = install(root, wheelhouse, "--config", str(REPO / "config/example-site.yaml"), "--secret", str(secret))
    assert done.returncode == 0, done.stdout + done.stderr
    return root


def test_systemd_analyze_verify_passes_on_the_installed_unit(installed):
    assert shutil.which("systemd-analyze"), "systemd-analyze (package systemd) is needed for this test"
    assert (installed / "etc/systemd/system/edge-agent.service").read_text() == UNIT.read_text()
    result = subprocess.run(["systemd-analyze", "verify", f"--root={installed}", "edge-agent.service"],
                            capture_output=True, text=True, timeout=120)
    # verify exits 0 on mere warnings (an unknown key, a bad value ignored): any output fails too.
    assert result.returncode == 0 and result.stdout == "" and result.stderr == "", result.stdout + result.stderr


def test_systemd_analyze_verify_notices_a_broken_unit(installed, tmp_path):
    """The verify step above can fail: a unit whose ExecStart is missing in the root is refused."""
    broken = installed / "etc/systemd/system/edge-agent-broken.service"
    broken.write_text(UNIT.read_text().replace("/opt/edge-agent/bin/edge-agent", "/opt/nothing/bin/edge-agent")
                      + "\n[Service]\nNoSuchSetting=1\n")
    try:
        result = subprocess.run(["systemd-analyze", "verify", f"--root={installed}", "edge-agent-broken.service"],
                                capture_output=True, text=True, timeout=120)
    finally:
        broken.unlink()
    assert result.returncode != 0 and "not executable" in result.stderr
    assert "NoSuchSetting" in result.stderr


def test_unit_has_the_service_settings_the_gateway_relies_on():
    settings = [line.strip() for line in UNIT.read_text().splitlines() if "=" in line and not line.startswith("#")]
    for wanted in ("Type=notify", "NotifyAccess=main", "WatchdogSec=30", "Restart=always", "ProtectSystem=strict",
                   "ProtectHome=yes", "NoNewPrivileges=yes", "PrivateTmp=yes", "StateDirectory=edge-agent",
                   "RuntimeDirectory=edge-agent", "DevicePolicy=closed", "DeviceAllow=char-ttyUSB rw",
                   "DeviceAllow=char-ttyAMA rw", "DeviceAllow=char-ttyACM rw", "DeviceAllow=char-input r",
                   "DeviceAllow=char-usb_device rw", "SupplementaryGroups=dialout input", "User=edge-agent",
                   "ExecStart=/opt/edge-agent/bin/edge-agent run --config /etc/edge-agent/site.yaml"):
        assert wanted in settings, wanted
    assert not any(s.startswith("PrivateDevices=yes") for s in settings), "it would hide the serial ports"


def test_fresh_install_user_directories_and_permissions(installed):
    uid, gid, members = ids(installed)
    assert 0 < uid < 1000 and 0 < gid < 1000, "a system user and group"
    passwd_line = next(line for line in (installed / "etc/passwd").read_text().splitlines()
                       if line.startswith("edge-agent:"))
    assert passwd_line.endswith(":/var/lib/edge-agent:/usr/sbin/nologin")
    assert "edge-agent" in members["dialout"] and "edge-agent" in members["input"]

    assert mode_owner(installed / "etc/edge-agent") == (0o750, 0, gid)
    assert mode_owner(installed / "etc/edge-agent/site.yaml") == (0o640, 0, gid)
    assert mode_owner(installed / "etc/edge-agent/mqtt-password") == (0o600, uid, gid)
    assert (installed / "etc/edge-agent/mqtt-password").read_text() == "s3cret\n"
    assert mode_owner(installed / "var/lib/edge-agent") == (0o750, uid, gid)
    assert mode_owner(installed / "etc/systemd/system/edge-agent.service")[0] == 0o644
    wants = installed / "etc/systemd/system/multi-user.target.wants/edge-agent.service"
    assert os.readlink(wants) == "/etc/systemd/system/edge-agent.service", "enabled"

    opt = installed / "opt/edge-agent"
    assert opt.is_symlink() and not os.readlink(opt).startswith("/"), "relative: valid inside the image"
    version = subprocess.run([str(opt / "bin/edge-agent"), "--version"], capture_output=True, text=True)
    assert version.returncode == 0 and version.stdout.startswith("edge-agent ")
    check = subprocess.run([str(opt / "bin/edge-agent"), "config", "check",
                            str(installed / "etc/edge-agent/site.yaml")], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    # The venv is the installed package, not a link to the checkout.
    where = subprocess.run([str(opt / "bin/python"), "-c", "import edge_agent; print(edge_agent.__file__)"],
                           capture_output=True, text=True, cwd="/")
    module = os.path.realpath(where.stdout.strip())
    assert module.startswith(str(installed / "opt/edge-agent-releases")) and "site-packages" in module, module
    assert not list(REPO.glob("build")), "the installer must not build inside the checkout"
    # Production carries no simulators: none in the installed tree, and none importable.
    sims = [str(p) for p in installed.rglob("*hardware_sim*")]
    assert sims == [], sims
    sim = subprocess.run([str(opt / "bin/python"), "-c", "import hardware_sim"], capture_output=True, text=True,
                         cwd="/")
    assert sim.returncode != 0 and "No module named 'hardware_sim'" in sim.stderr, sim.stdout + sim.stderr


def test_upgrade_migrates_and_keeps_data_then_a_downgrade_is_refused(installed, wheelhouse):
    uid, gid, _ = ids(installed)
    db = installed / "var/lib/edge-agent/edge-agent.db"
    # The database of the previous schema, with an unsynced event and a session in it.
    conn = sqlite3.connect(db)
    conn.executescript(MIGRATIONS[0])
    conn.execute("PRAGMA user_version = 1")
    conn.execute("INSERT INTO outbox(seq, id, type, body) VALUES (7, 'ev-7', 'session_ended', '{}')")
    conn.execute("INSERT INTO sessions(id, evse_id, status, auth, started_at, meter_start_wh, offline_start) "
                 "VALUES ('s-1', '1', 'ended', 'local_list', '2026-01-01T00:00:00Z', 100, 1)")
    conn.commit()
    conn.close()
    before = os.readlink(installed / "opt/edge-agent")

    upgrade = install(installed, wheelhouse)
    assert upgrade.returncode == 0, upgrade.stdout + upgrade.stderr
    assert "migrating the database" in upgrade.stdout
    after = os.readlink(installed / "opt/edge-agent")
    assert after != before and (installed / "opt" / before).is_dir(), "the previous release is kept"
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert conn.execute("SELECT id FROM outbox").fetchall() == [("ev-7",)]
    assert conn.execute("SELECT id, meter_start_wh FROM sessions").fetchall() == [("s-1", 100)]
    conn.close()
    assert mode_owner(db)[1:] == (uid, gid), "the agent must be able to write its database"
    assert (installed / "etc/edge-agent/site.yaml").exists(), "the configuration is kept"

    # Data from a newer release: the installer refuses before switching anything.
    conn = sqlite3.connect(db)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    releases = sorted(p.name for p in (installed / "opt/edge-agent-releases").iterdir())
    refused = install(installed, wheelhouse)
    assert refused.returncode == 5, refused.stdout + refused.stderr
    assert "refusing the downgrade" in refused.stderr and "newer" in refused.stderr
    assert os.readlink(installed / "opt/edge-agent") == after
    assert sorted(p.name for p in (installed / "opt/edge-agent-releases").iterdir()) == releases
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION + 1
    conn.close()
