"""``authz certs``: client certificates."""

from __future__ import annotations

from pathlib import Path

import click

from authz.cli.base import command, emit, main, store


@main.group()
def certs() -> None:
    """Client certificates: register to a principal, revoke."""


def _read_cert(path: Path):
    from cryptography import x509

    data = path.read_bytes()
    try:
        return x509.load_pem_x509_certificate(data) if b"-----BEGIN" in data else x509.load_der_x509_certificate(data)
    except ValueError:
        raise click.BadParameter(f"{path} is not a PEM or DER certificate", param_hint="'--file'") from None


def _cert_facts(path: Path) -> tuple[str, str, str, float]:
    from cryptography.hazmat.primitives import hashes

    cert = _read_cert(path)
    return (cert.fingerprint(hashes.SHA256()).hex(), cert.issuer.rfc4514_string(), format(cert.serial_number, "x"),
            cert.not_valid_after_utc.timestamp())


_FILE = click.Path(exists=True, dir_okay=False, path_type=Path)


@command(certs, "add")
@click.option("--principal", required=True, help="The service this certificate identifies.")
@click.option("--fingerprint", help="SHA-256 of the DER, hex (any case, colons allowed).")
@click.option("--file", "cert_file", type=_FILE, help="The certificate (PEM or DER).")
def certs_add(principal, fingerprint, cert_file) -> None:
    """Register a certificate (mtls principal_from: registered)."""
    if bool(fingerprint) == bool(cert_file):
        raise click.UsageError("give exactly one of --fingerprint or --file")
    subject = not_after = None
    if cert_file:
        fingerprint, _, _, not_after = _cert_facts(cert_file)
        subject = _read_cert(cert_file).subject.rfc4514_string()
    record = store().certificates.register(principal, fingerprint, subject, not_after)
    emit(click.get_current_context(), record, f"Registered {record['fingerprint']} to {principal}")


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
    s = store()
    if cert_file:
        fp, cert_issuer, cert_serial, not_after = _cert_facts(cert_file)
        record = s.certificates.revoke_fingerprint(fp, not_after)
        s.certificates.revoke_serial(cert_issuer, cert_serial, not_after)
    elif fingerprint:
        record = s.certificates.revoke_fingerprint(fingerprint)
    else:
        record = s.certificates.revoke_serial(issuer, serial)
    what = (f"serial {record['value']} of {record['issuer']}" if record["kind"] == "cert_serial"
            else f"certificate {record['value']}")
    emit(click.get_current_context(), record, f"Revoked {what}")


@command(certs, "list")
def certs_list() -> None:
    """Registered and revoked certificates."""
    s = store()
    registered = s.certificates.list()
    revoked = [r for r in s.revocations.list() if r["kind"] != "jti"]
    lines = [f"registered {r['fingerprint']}  {r['principal']}  {r['subject'] or ''}".rstrip() for r in registered]
    lines += [f"revoked    {r['value']}  {r['issuer'] or ''}".rstrip() for r in revoked]
    emit(click.get_current_context(), {"registered": registered, "revoked": revoked},
         "\n".join(lines) or "no certificates")
