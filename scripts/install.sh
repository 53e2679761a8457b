#!/usr/bin/env bash
# Installs or upgrades edge-agent from this checkout on Raspberry Pi OS / Debian 12.
#
#   sudo ./scripts/install.sh --config site.yaml --secret mqtt-password     # first install
#   sudo ./scripts/install.sh                                               # upgrade: keeps config and data
#
# What it does (docs/operations.md explains each step):
#   - a system user `edge-agent` in the groups dialout (RS-485 adapters, UART readers) and input (HID readers)
#   - /etc/edge-agent (root:edge-agent 0750): site.yaml 0640 root:edge-agent, secrets 0600 edge-agent
#   - /var/lib/edge-agent (edge-agent 0750): the database, kept across upgrades
#   - a new release in /opt/edge-agent-releases/<version>-<time> (a venv with the package), checked
#     against the database BEFORE anything changes: data from a newer release is a downgrade, refused
#   - /opt/edge-agent -> that release (switched atomically), the database migrated, the previous
#     release kept for a manual rollback
#   - systemd/edge-agent.service installed, enabled, and (re)started when a site.yaml exists
#
# Options:
#   --root DIR          install into DIR instead of / (an image, or a test); implies no service start
#   --no-systemctl      do not call systemctl (the unit is enabled by its symlink only)
#   --config FILE       the site configuration to install (checked first) as /etc/edge-agent/site.yaml
#   --secret FILE       a secret to install in /etc/edge-agent/ (0600, readable by the agent only); repeatable
#   --wheelhouse DIR    install offline from wheels in DIR (pip wheel -w DIR . 'setuptools>=68' wheel)
#   --python PYTHON     the Python 3.11+ to build the venv with (default python3)
#   --allow-downgrade   install an older release than the installed one (never onto a newer database)
#   --no-start          install and enable, but do not (re)start the service
#
# Exit codes: 0 installed, 1 failed (nothing switched), 2 usage, 3 invalid --config, 5 downgrade refused.
set -euo pipefail

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }
die() { echo "install.sh: $1" >&2; exit "${2:-1}"; }
say() { echo "==> $*"; }

ROOT=/
SYSTEMCTL=1
START=1
CONFIG=
SECRETS=()
WHEELHOUSE=
PYTHON=python3
ALLOW_DOWNGRADE=0
while [ $# -gt 0 ]; do
  case "$1" in
    --root) ROOT="${2:?--root needs a directory}"; shift 2 ;;
    --no-systemctl) SYSTEMCTL=0; shift ;;
    --no-start) START=0; shift ;;
    --config) CONFIG="${2:?--config needs a file}"; shift 2 ;;
    --secret) SECRETS+=("${2:?--secret needs a file}"); shift 2 ;;
    --wheelhouse) WHEELHOUSE="${2:?--wheelhouse needs a directory}"; shift 2 ;;
    --python) PYTHON="${2:?--python needs an interpreter}"; shift 2 ;;
    --allow-downgrade) ALLOW_DOWNGRADE=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; die "unknown option $1" 2 ;;
  esac
done

[ "$(id -u)" = 0 ] || die "run as root: sudo $0 $*"
SRC="$(cd "$(dirname "$0")/.." && pwd)"
ROOT="$(cd "$ROOT" 2>/dev/null && pwd)" || die "--root: no such directory" 2
R="${ROOT%/}"                                # "" when installing into /
[ -n "$R" ] && START=0                       # nothing runs inside an image
OPT="$R/opt/edge-agent"
RELEASES="$R/opt/edge-agent-releases"
ETC="$R/etc/edge-agent"
DATA="$R/var/lib/edge-agent"
UNIT_DIR="$R/etc/systemd/system"
USER_NAME=edge-agent

[ -f "$SRC/pyproject.toml" ] && [ -d "$SRC/edge_agent" ] || die "$SRC is not an edge-agent checkout"
[ -z "$CONFIG" ] || [ -f "$CONFIG" ] || die "--config $CONFIG: no such file" 2
for secret in "${SECRETS[@]}"; do [ -f "$secret" ] || die "--secret $secret: no such file" 2; done
[ -z "$WHEELHOUSE" ] || [ -d "$WHEELHOUSE" ] || die "--wheelhouse $WHEELHOUSE: no such directory" 2

# -- Python -----------------------------------------------------------------------------------------
if [ -z "$R" ] && ! "$PYTHON" -c 'import ensurepip, venv' >/dev/null 2>&1; then
  say "installing python3-venv"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
fi
"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null \
  || die "$PYTHON is not Python 3.11 or newer (Debian 12 / Raspberry Pi OS bookworm has 3.11)"
"$PYTHON" -c 'import ensurepip, venv' >/dev/null 2>&1 || die "$PYTHON has no venv module: apt-get install python3-venv"

# -- the system user --------------------------------------------------------------------------------
if [ -n "$R" ]; then
  [ -f "$R/etc/passwd" ] && [ -f "$R/etc/group" ] || die "$ROOT has no etc/passwd and etc/group: not a system root" 2
  PREFIX=(--prefix "$R")
else
  PREFIX=()
fi
has_group() { grep -q "^$1:" "$R/etc/group"; }
for group in dialout input; do
  has_group "$group" || { say "creating group $group"; groupadd "${PREFIX[@]}" --system "$group"; }
done
if ! grep -q "^$USER_NAME:" "$R/etc/passwd"; then
  say "creating system user $USER_NAME"
  useradd "${PREFIX[@]}" --system --user-group --no-create-home --home-dir /var/lib/edge-agent \
    --shell /usr/sbin/nologin --comment "edge-agent EV charging gateway" "$USER_NAME"
fi
usermod "${PREFIX[@]}" --append --groups dialout,input "$USER_NAME"
AGENT_UID="$(awk -F: -v u="$USER_NAME" '$1 == u { print $3 }' "$R/etc/passwd")"
AGENT_GID="$(awk -F: -v g="$USER_NAME" '$1 == g { print $3 }' "$R/etc/group")"
[ -n "$AGENT_UID" ] && [ -n "$AGENT_GID" ] || die "cannot find the uid/gid of $USER_NAME in $ROOT/etc"

# -- the new release, built beside the running one ---------------------------------------------------
VERSION="$(sed -n 's/^version = "\(.*\)"$/\1/p' "$SRC/pyproject.toml" | head -n1)"
[ -n "$VERSION" ] || die "no version in $SRC/pyproject.toml"
RELEASE_ID="$VERSION-$(date -u +%Y%m%dT%H%M%SZ)"
n=1
while [ -e "$RELEASES/$RELEASE_ID" ]; do n=$((n + 1)); RELEASE_ID="$VERSION-$(date -u +%Y%m%dT%H%M%SZ)-$n"; done
NEW="$RELEASES/$RELEASE_ID"
STAGE="$(mktemp -d)"
SWITCHED=0
cleanup() {
  rm -rf "$STAGE"
  if [ "$SWITCHED" = 0 ] && [ -n "${NEW:-}" ] && [ -d "$NEW" ]; then rm -rf "$NEW"; fi
}
trap cleanup EXIT

say "building release $RELEASE_ID in $NEW"
# A copy of the sources: the build leaves nothing (build/, egg-info, root-owned files) in the checkout.
# The product only: the simulators (hardware_sim/) are for the tests and the demo, not a gateway.
mkdir -p "$STAGE/src" "$RELEASES"
cp -a "$SRC/pyproject.toml" "$SRC/README.md" "$SRC/edge_agent" "$SRC/drivers" "$STAGE/src/"
find "$STAGE/src" -name __pycache__ -prune -exec rm -rf {} +
"$PYTHON" -m venv "$NEW"
PIP_ARGS=(--quiet --disable-pip-version-check)
[ -n "$WHEELHOUSE" ] && PIP_ARGS+=(--no-index --find-links "$WHEELHOUSE")
"$NEW/bin/python" -m pip install "${PIP_ARGS[@]}" "$STAGE/src" || die "pip install failed; nothing was changed"
install -d -m 0755 "$NEW/share/doc/edge-agent"
install -m 0644 "$SRC/docs/operations.md" "$SRC/config/example-site.yaml" "$NEW/share/doc/edge-agent/" 2>/dev/null || true
NEW_VERSION="$("$NEW/bin/edge-agent" --version | awk '{ print $2 }')"

# -- checks before anything changes ------------------------------------------------------------------
say "checking the database in $DATA against the new release"
set +e
CHECK="$("$NEW/bin/edge-agent" db-check --data-dir "$DATA" 2>&1)"
rc=$?
set -e
echo "    $CHECK"
if [ "$rc" = 5 ]; then
  die "refusing the downgrade: the database was written by a newer edge-agent than $NEW_VERSION.
    Nothing was changed; the installed release keeps running. Install that newer release (or a later one)." 5
elif [ "$rc" != 0 ]; then
  die "the database check failed (exit $rc); nothing was changed"
fi
if [ -x "$OPT/bin/edge-agent" ]; then
  OLD_VERSION="$("$OPT/bin/edge-agent" --version 2>/dev/null | awk '{ print $2 }')" || OLD_VERSION=
  if [ -n "$OLD_VERSION" ] && [ "$OLD_VERSION" != "$NEW_VERSION" ] \
     && [ "$(printf '%s\n%s\n' "$OLD_VERSION" "$NEW_VERSION" | sort -V | head -n1)" = "$NEW_VERSION" ] \
     && [ "$ALLOW_DOWNGRADE" = 0 ]; then
    die "refusing the downgrade from $OLD_VERSION to $NEW_VERSION (--allow-downgrade installs it anyway;
    the database check above still guards the data)" 5
  fi
  say "upgrading ${OLD_VERSION:-an unknown release} -> $NEW_VERSION"
fi
if [ -n "$CONFIG" ]; then
  say "checking $CONFIG"
  "$NEW/bin/edge-agent" config check "$CONFIG" || die "--config $CONFIG is not valid; nothing was changed" 3
fi

# -- directories, configuration, secrets ------------------------------------------------------------
install -d -m 0755 "$R/etc" "$R/var/lib" "$R/opt" "$UNIT_DIR" "$R/usr/local/bin"
install -d -m 0750 -o 0 -g "$AGENT_GID" "$ETC"
chown 0:"$AGENT_GID" "$ETC"; chmod 0750 "$ETC"
install -d -m 0750 -o "$AGENT_UID" -g "$AGENT_GID" "$DATA"
chown "$AGENT_UID:$AGENT_GID" "$DATA"; chmod 0750 "$DATA"
install -m 0644 "$SRC/config/example-site.yaml" "$ETC/site.yaml.example"
if [ -n "$CONFIG" ]; then
  if [ -f "$ETC/site.yaml" ] && ! cmp -s "$CONFIG" "$ETC/site.yaml"; then
    cp -p "$ETC/site.yaml" "$ETC/site.yaml.before-$RELEASE_ID"
    say "previous site.yaml kept as $ETC/site.yaml.before-$RELEASE_ID"
  fi
  install -m 0640 -o 0 -g "$AGENT_GID" "$CONFIG" "$ETC/site.yaml"
fi
[ -f "$ETC/site.yaml" ] && { chown 0:"$AGENT_GID" "$ETC/site.yaml"; chmod 0640 "$ETC/site.yaml"; }
for secret in "${SECRETS[@]}"; do
  install -m 0600 -o "$AGENT_UID" -g "$AGENT_GID" "$secret" "$ETC/$(basename "$secret")"
done
# Secrets installed by hand keep being readable by the agent alone.
find "$ETC" -maxdepth 1 -type f \( -name '*.key' -o -name '*password*' -o -name '*secret*' \) \
  -exec chown "$AGENT_UID:$AGENT_GID" {} + -exec chmod 0600 {} +

# -- switch to the new release -------------------------------------------------------------------------
if [ -z "$R" ] && [ "$SYSTEMCTL" = 1 ] && systemctl is-active --quiet edge-agent.service; then
  say "stopping edge-agent"
  systemctl stop edge-agent.service
fi
if [ -e "$OPT" ] && [ ! -L "$OPT" ]; then
  mv "$OPT" "$RELEASES/unmanaged-$(date -u +%Y%m%dT%H%M%SZ)"
fi
ln -sfn "edge-agent-releases/$RELEASE_ID" "$R/opt/.edge-agent.switch"
mv -T "$R/opt/.edge-agent.switch" "$OPT"
SWITCHED=1
ln -sfn /opt/edge-agent/bin/edge-agent "$R/usr/local/bin/edge-agent"

if [ -f "$DATA/edge-agent.db" ]; then
  say "migrating the database"
  "$OPT/bin/edge-agent" migrate --data-dir "$DATA"
fi
chown -R "$AGENT_UID:$AGENT_GID" "$DATA"

# Keep the release now running and the one before it (a manual rollback: see docs/operations.md).
current="$(readlink "$OPT")"; current="${current##*/}"
ls -1t "$RELEASES" | { grep -vx "$current" || true; } | tail -n +2 | while read -r old; do rm -rf "${RELEASES:?}/$old"; done

# -- the unit ---------------------------------------------------------------------------------------
say "installing $UNIT_DIR/edge-agent.service"
install -m 0644 "$SRC/systemd/edge-agent.service" "$UNIT_DIR/edge-agent.service"
if [ "$SYSTEMCTL" = 1 ]; then
  if [ -z "$R" ]; then
    systemctl daemon-reload
    systemctl enable edge-agent.service
  else
    systemctl --root="$ROOT" enable edge-agent.service
  fi
else
  install -d -m 0755 "$UNIT_DIR/multi-user.target.wants"
  ln -sfn /etc/systemd/system/edge-agent.service "$UNIT_DIR/multi-user.target.wants/edge-agent.service"
fi

if [ "$START" = 1 ] && [ "$SYSTEMCTL" = 1 ]; then
  if [ -f "$ETC/site.yaml" ]; then
    say "starting edge-agent"
    systemctl restart edge-agent.service
    for _ in $(seq 60); do
      systemctl is-active --quiet edge-agent.service && break
      sleep 1
    done
    systemctl is-active --quiet edge-agent.service \
      || die "edge-agent did not become ready; see: journalctl -u edge-agent -n 50"
  fi
fi

echo
echo "edge-agent $NEW_VERSION installed in $OPT ($RELEASE_ID)"
if [ ! -f "$ETC/site.yaml" ]; then
  echo "  next: write $ETC/site.yaml (edge-agent config init --out /etc/edge-agent/site.yaml,"
  echo "        or start from $ETC/site.yaml.example), then: systemctl start edge-agent"
else
  echo "  check it: edge-agent status        logs: journalctl -u edge-agent -f"
fi
