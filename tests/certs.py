"""A throwaway certificate authority and a server certificate for 127.0.0.1, made with the openssl command, for
tests that speak TLS to a server on loopback."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest


def _openssl(where: Path, *args: str) -> None:
    subprocess.run(["openssl", *args], cwd=where, check=True, capture_output=True)


def loopback_certs(where: Path) -> None:
    """Writes ca.crt (the authority to trust), server.crt and server.key (for 127.0.0.1, valid a day) in `where`.
    Skips the test when openssl is not at hand."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not at hand")
    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    _openssl(where, "req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", "1", "-subj", "/CN=test-ca")
    _openssl(where, "req", *ec, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1")
    (where / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    _openssl(
        where,
        *("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial"),
        *("-out", "server.crt", "-days", "1", "-extfile", "san.ext"),
    )
