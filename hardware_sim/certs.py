"""Test certificates made with the openssl command line: a CA, server and client certificates.

    ca = CertificateAuthority.create(tmp_path / "pki", name="site-ca")
    server = ca.issue_server("broker", hosts=("localhost", "127.0.0.1"))
    client = ca.issue_client("gw-0042")            # CN = the gateway id, clientAuth EKU

Keys are EC P-256 (quick to make) and written with mode 0600, as the agent demands of its own
key. Nothing here is for production: the CA key sits next to its certificate.
"""
from __future__ import annotations

import ipaddress
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

DAYS = 30


class CertError(RuntimeError):
    pass


def _openssl() -> str:
    path = shutil.which("openssl")
    if path is None:
        raise CertError("openssl not installed: apt-get install openssl")
    return path


def _run(*args: str) -> None:
    result = subprocess.run([_openssl(), *args], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise CertError(f"openssl {' '.join(args[:2])} failed: {result.stderr.strip()}")


def _new_key_and_request(key: Path, csr: Path, subject: str) -> None:
    _run("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
         "-keyout", str(key), "-out", str(csr), "-subj", subject)
    os.chmod(key, 0o600)


@dataclass(frozen=True, slots=True)
class CertPair:
    cert: Path
    key: Path


@dataclass(frozen=True, slots=True)
class CertificateAuthority:
    directory: Path
    name: str
    cert: Path
    key: Path

    @classmethod
    def create(cls, directory: str | Path, *, name: str = "test-ca") -> CertificateAuthority:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        cert, key = directory / f"{name}.pem", directory / f"{name}.key"
        _run("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
             "-keyout", str(key), "-out", str(cert), "-days", str(DAYS), "-subj", f"/CN={name}",
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign")
        os.chmod(key, 0o600)
        return cls(directory, name, cert, key)

    def issue_server(self, name: str, *, hosts: tuple[str, ...] = ("localhost", "127.0.0.1")) -> CertPair:
        names = [f"IP:{h}" if _is_ip(h) else f"DNS:{h}" for h in hosts]
        return self._issue(name, f"/CN={hosts[0] if hosts else name}",
                           [f"subjectAltName={','.join(names)}" if names else "",
                            "extendedKeyUsage=serverAuth"])

    def issue_client(self, common_name: str) -> CertPair:
        return self._issue(common_name, f"/CN={common_name}", ["extendedKeyUsage=clientAuth"])

    def _issue(self, name: str, subject: str, extensions: list[str]) -> CertPair:
        key, csr, cert = (self.directory / f"{name}{suffix}" for suffix in (".key", ".csr", ".pem"))
        ext = self.directory / f"{name}.ext"
        ext.write_text("\n".join(["basicConstraints=CA:FALSE",
                                  "keyUsage=critical,digitalSignature,keyEncipherment",
                                  *[line for line in extensions if line]]) + "\n")
        _new_key_and_request(key, csr, subject)
        _run("x509", "-req", "-in", str(csr), "-CA", str(self.cert), "-CAkey", str(self.key),
             "-CAcreateserial", "-out", str(cert), "-days", str(DAYS), "-extfile", str(ext))
        return CertPair(cert, key)


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True
