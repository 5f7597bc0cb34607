"""``authz certs``: client certificates."""

from __future__ import annotations

from pathlib import Path

import click

from authz.cli.base import admin, command, emit, main
from authz.credentials.x509 import Unreadable


@main.group()
def certs() -> None:
    """Client certificates: register to a principal, revoke."""


_FILE = click.Path(exists=True, dir_okay=False, path_type=Path)


def _from_file(path: Path, action):
    """``action`` on the certificate file's bytes; an unreadable certificate is a bad ``--file``."""
    try:
        return action(path.read_bytes())
    except Unreadable as exc:
        raise click.BadParameter(f"{path} is {exc}", param_hint="'--file'") from None


@command(certs, "add")
@click.option("--principal", required=True, help="The service this certificate identifies.")
@click.option("--fingerprint", help="SHA-256 of the DER, hex (any case, colons allowed).")
@click.option("--file", "cert_file", type=_FILE, help="The certificate (PEM or DER).")
def certs_add(principal, fingerprint, cert_file) -> None:
    """Register a certificate (mtls principal_from: registered)."""
    if bool(fingerprint) == bool(cert_file):
        raise click.UsageError("give exactly one of --fingerprint or --file")
    certificates = admin().certificates
    if cert_file:
        record = _from_file(cert_file, lambda data: certificates.register(principal, certificate=data))
    else:
        record = certificates.register(principal, fingerprint)
    emit(click.get_current_context(), record.to_json(), f"Registered {record.fingerprint} to {principal}")


@command(certs, "revoke")
@click.option("--fingerprint", help="SHA-256 of the DER, hex (any case, colons allowed).")
@click.option("--file", "cert_file", type=_FILE, help="The certificate (PEM or DER).")
@click.option("--issuer", help="Issuer DN (RFC 4514, e.g. 'CN=Mesh CA,O=Corp'), with --serial.")
@click.option("--serial", help="Serial number in hex, with --issuer.")
def certs_revoke(fingerprint, cert_file, issuer, serial) -> None:
    """Refuse a certificate from the next request on."""
    given = [bool(fingerprint), bool(cert_file), bool(issuer or serial)]
    if sum(given) != 1 or ((issuer or serial) and not (issuer and serial)):
        raise click.UsageError("give exactly one of --fingerprint, --file, or --issuer with --serial")
    certificates = admin().certificates
    if cert_file:
        record = _from_file(cert_file, certificates.revoke_certificate)
    elif fingerprint:
        record = certificates.revoke_fingerprint(fingerprint)
    else:
        record = certificates.revoke_serial(issuer, serial)
    what = (f"serial {record.value} of {record.issuer}" if record.kind == "cert_serial"
            else f"certificate {record.value}")
    emit(click.get_current_context(), record.to_json(), f"Revoked {what}")


@command(certs, "list")
def certs_list() -> None:
    """Registered and revoked certificates."""
    registered, revoked = admin().certificates.list()
    lines = [f"registered {r.fingerprint}  {r.principal}  {r.subject or ''}".rstrip() for r in registered]
    lines += [f"revoked    {r.value}  {r.issuer or ''}".rstrip() for r in revoked]
    emit(click.get_current_context(),
         {"registered": [r.to_json() for r in registered], "revoked": [r.to_json() for r in revoked]},
         "\n".join(lines) or "no certificates")
