"""The link's secrets and trust: the TLS contexts and the MQTT password, read and checked once
at start-up.

A local mistake (a missing file, a key others can read, a certificate that does not match its
key) is a ConfigError naming the config key and the file: the agent refuses to start, as
`ssh` refuses a key with loose permissions. What the broker does later (an unknown CA, a refused
certificate) is not fatal: that is the link's business and it retries.
"""
from __future__ import annotations

import os
import ssl
import stat
from dataclasses import dataclass
from pathlib import Path

from ..config import CloudConfig, ConfigError, ConfigIssue

# Group or others may not read, write or execute a private key or a password file.
PRIVATE_MODE_MASK = 0o077


@dataclass(frozen=True, slots=True)
class TlsFiles:
    ca_file: str | None
    cert_file: str | None = None
    key_file: str | None = None


@dataclass(frozen=True, slots=True)
class LinkCredentials:
    tls: ssl.SSLContext | None
    username: str | None
    password: str | None


def _error(key: str, message: str, source: str) -> ConfigError:
    return ConfigError([ConfigIssue(key, None, message)], source=source)


def check_private_file(path: str | Path, *, key: str, source: str = "<config>") -> None:
    """Raises ConfigError unless `path` is a regular file only its owner may access."""
    try:
        info = os.stat(path)
    except OSError as exc:
        raise _error(key, f"cannot read {path}: {exc.strerror}", source) from None
    if not stat.S_ISREG(info.st_mode):
        raise _error(key, f"{path} is not a regular file", source)
    mode = stat.S_IMODE(info.st_mode)
    if mode & PRIVATE_MODE_MASK:
        raise _error(key, f"{path} has mode {mode:04o}: group or others may access this secret; "
                          f"make it private with `chmod 600 {path}`", source)
    if not os.access(path, os.R_OK):
        raise _error(key, f"cannot read {path}: permission denied", source)


def _readable(path: str | Path, *, key: str, source: str) -> None:
    if not os.access(path, os.R_OK) or not os.path.isfile(path):
        reason = "no such file" if not os.path.exists(path) else "not a readable file"
        raise _error(key, f"cannot read {path}: {reason}", source)


def tls_context(files: TlsFiles, *, key_prefix: str = "cloud.tls", ca_key: str | None = None,
                source: str = "<config>") -> ssl.SSLContext:
    """A client context: TLS 1.2 or newer, the server's certificate checked against `ca_file`
    (the system's CAs without one) and its host name checked; a client certificate when given."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)  # CERT_REQUIRED, check_hostname
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    ca_key = ca_key or f"{key_prefix}.ca_file"
    if files.ca_file is not None:
        _readable(files.ca_file, key=ca_key, source=source)
        try:
            context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=files.ca_file)
            context.minimum_version = ssl.TLSVersion.TLSv1_2
        except (ssl.SSLError, ValueError) as exc:
            raise _error(ca_key, f"{files.ca_file} holds no usable CA certificate "
                                                  f"({exc})", source) from None
    if files.cert_file is not None or files.key_file is not None:
        if files.cert_file is None or files.key_file is None:
            raise _error(f"{key_prefix}.key_file", "mutual TLS needs both cert_file and key_file", source)
        _readable(files.cert_file, key=f"{key_prefix}.cert_file", source=source)
        check_private_file(files.key_file, key=f"{key_prefix}.key_file", source=source)
        try:
            context.load_cert_chain(files.cert_file, files.key_file)
        except ssl.SSLError as exc:
            raise _error(f"{key_prefix}.cert_file", f"cannot use {files.cert_file} with "
                                                    f"{files.key_file}: {exc.reason or exc}", source) from None
    return context


def read_password(path: str | Path, *, key: str = "cloud.password_file", source: str = "<config>") -> str:
    """The MQTT password: the file's content without the trailing newline. The password never
    sits in the config itself or on a command line (where `ps` shows it)."""
    check_private_file(path, key=key, source=source)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise _error(key, f"cannot read {path}: {exc}", source) from None
    password = text.rstrip("\r\n")
    if not password:
        raise _error(key, f"{path} is empty", source)
    return password


def link_credentials(cloud: CloudConfig, *, source: str = "<config>") -> LinkCredentials:
    """Everything the MQTT link needs from the cloud section, checked; raises ConfigError
    naming every problem found (the TLS files and the password file alike)."""
    issues: list[ConfigIssue] = []
    context = None
    if cloud.tls is not None:
        try:
            context = tls_context(TlsFiles(_as_text(cloud.tls.ca_file), _as_text(cloud.tls.cert_file),
                                           _as_text(cloud.tls.key_file)), source=source)
        except ConfigError as exc:
            issues += exc.errors
    password = None
    if cloud.password_file is not None:
        try:
            password = read_password(cloud.password_file, source=source)
        except ConfigError as exc:
            issues += exc.errors
        if cloud.username is None:
            issues.append(ConfigIssue("cloud.username", None, "is required with password_file"))
    if issues:
        raise ConfigError(issues, source=source)
    return LinkCredentials(context, cloud.username, password)


def _as_text(path: Path | None) -> str | None:
    return str(path) if path is not None else None


def lists_verify(cloud: CloudConfig, *, source: str = "<config>") -> ssl.SSLContext:
    """How HTTPS list downloads check the server: `cloud.lists_ca_file`, else `cloud.tls.ca_file`,
    else the system's CAs. Always with the host name checked."""
    ca_file = cloud.lists_ca_file
    key = "cloud.lists_ca_file"
    if ca_file is None and cloud.tls is not None and cloud.tls.ca_file is not None:
        ca_file, key = cloud.tls.ca_file, "cloud.tls.ca_file"
    if ca_file is None:
        return tls_context(TlsFiles(None), source=source)
    return tls_context(TlsFiles(str(ca_file)), ca_key=key, source=source)
