"""Service settings: one table of every ``AUTHZ_*`` variable.

``SETTINGS`` names each variable once, with its parser, its default and a one-line
meaning. Everything else is derived from it, so nothing can drift:

- ``Settings.from_env()`` reads the environment through the table (CLI flags override);
- the CLI takes its option defaults from it (``default_from_env("AUTHZ_DB")``);
- the README's configuration table is rendered from it (``python -m authz.config``
  prints it; ``tests/test_readme.py`` fails when the README's copy differs).

Other modules read a ``Settings``, never the environment. The exceptions are written
where they must be, with the reason beside them: ``PROMETHEUS_MULTIPROC_DIR`` has to be
settled before ``prometheus_client`` is imported (``authz.serve``, ``authz.cli``), and
granian's copy of the environment into every request is scrubbed before a worker
starts (``authz.serve.prepare_worker_environment``).
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from authz.credentials.x509 import MAX_CHAIN
from authz.errors import AuthzError
from authz.request import TARGET_RULES, TrustedNetworks


class SettingsError(AuthzError, ValueError):
    """A setting has a value authz cannot use; the message names the variable."""


Parser = Callable[[str, str], Any]
"""``parse(variable, text) -> value``; raises ``SettingsError`` naming the variable."""


@dataclass(frozen=True)
class Setting:
    """One environment variable: where it goes, how it is read, and what it means."""

    name: str  # the environment variable, e.g. AUTHZ_DB
    field: str  # the Settings attribute it fills
    parse: Parser
    default: Any  # the value when the variable is unset (or empty, see below)
    doc: str  # one line: the README's "meaning" column
    shown: str | None = None  # the default as an operator writes it, when rendering cannot tell
    # An empty value counts as unset, except where "nothing" is a meaningful answer
    # (AUTHZ_TRUSTED_PROXIES= trusts no peer at all).
    empty_is_unset: bool = True

    @property
    def default_text(self) -> str | None:
        """The default as it would be written in the environment; None when unset."""
        if self.shown is not None:
            return self.shown
        value = self.default
        if value is None or value == frozenset():
            return None
        if isinstance(value, tuple):
            return ",".join(value)
        if isinstance(value, float):
            return f"{value:g}"
        return str(value)

    def read(self, env: Mapping[str, str]) -> Any:
        """This variable's value in ``env``, parsed; the default when it is unset."""
        text = env.get(self.name)
        if text is None or (self.empty_is_unset and not text):
            return self.default
        return self.parse(self.name, text)


# Parsers. Each is given the variable's name so that its message names it.

def _text(name: str, text: str) -> str:
    return text


def _path(name: str, text: str) -> Path:
    return Path(text)


def _list(name: str, text: str) -> tuple[str, ...]:
    """Comma-separated, blanks dropped (the networks are checked by TrustedNetworks)."""
    return tuple(item.strip() for item in text.split(",") if item.strip())


def _seconds(name: str, text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise SettingsError(f"{name} must be a number of seconds") from None


def _bounded(low: float, high: float, unit: str, whole: bool = False) -> Parser:
    """A number from ``low`` to ``high``; ``whole`` truncates it to an int."""

    def parse(name: str, text: str) -> float | int:
        try:
            value = float(text)
        except ValueError:
            value = float("nan")
        if not low <= value <= high:
            raise SettingsError(f"{name} must be a number from {low:g} to {high:g} {unit}")
        return int(value) if whole else value

    return parse


def _on_off(name: str, text: str) -> bool:
    if text not in ("on", "off"):
        raise SettingsError(f"{name} must be 'on' or 'off'")
    return text == "on"


def _webhook_url(name: str, text: str) -> str:
    """The rule ``authenticators.http_client.fetch`` enforces on every request, checked
    at start-up: https, or http to a loopback host (events travel in clear otherwise)."""
    parts = urlsplit(text)
    host = parts.hostname or ""
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not ((parts.scheme == "https" and host) or (parts.scheme == "http" and loopback)):
        raise SettingsError(f"{name} must be an https:// URL (http:// only for loopback hosts)")
    return text


def _webhook_secret(name: str, text: str) -> str:
    from authz.credentials.webhook_signature import parse_secret

    try:
        parse_secret(text)
    except ValueError as exc:  # the message never quotes the secret
        raise SettingsError(f"{name} {exc}") from None
    return text


def _identity_token_everywhere(name: str, text: str) -> bool:
    if text not in ("routes", "all"):
        raise SettingsError(f"{name} must be 'routes' (per route option) or 'all'")
    return text == "all"


def _target_rules(name: str, text: str) -> frozenset[str]:
    names = frozenset(_list(name, text))
    unknown = sorted(names - TARGET_RULES.keys())
    if unknown:
        raise SettingsError(f"{name}: unknown rule {unknown[0]!r}; the rules that can be "
                            f"relaxed are {', '.join(TARGET_RULES)}")
    return names


_TABLE: tuple[Setting, ...] = (
    Setting("AUTHZ_DB", "db_path", _text, "authz.db",
            "credential store: a path, `sqlite:///relative` or `sqlite:////absolute`, or "
            "`postgresql://user:password@host/db` for many replicas (`authz db init` creates or migrates it)"),
    Setting("AUTHZ_MAX_STALENESS", "max_staleness", _bounded(1, 86_400, "seconds"), 30.0,
            "PostgreSQL: seconds a replica serves credentials from memory without confirming it is current; "
            "past it, what needs the store is denied (500 `upstream_unavailable`)"),
    Setting("AUTHZ_POLICY_DIR", "policy_dir", _path, Path("policies"),
            "every `*.json` directly inside is a policy file"),
    Setting("AUTHZ_TRUSTED_PROXIES", "trusted_proxies", _list, ("127.0.0.1/32", "::1/128"),
            "peers whose decisions requests and forwarded headers are believed; others get 403 "
            "`untrusted_proxy`", empty_is_unset=False),
    Setting("AUTHZ_PROXY_SECRET", "proxy_secret", _text, None,
            "when set, decision requests must carry it in `X-Authz-Proxy-Secret`"),
    Setting("AUTHZ_LAST_USED_INTERVAL", "last_used_interval", _seconds, 30.0,
            "seconds between batched writes of keys' last-use times and usage"),
    Setting("AUTHZ_KEY_USAGE", "key_usage", _on_off, True,
            "`on`: count each API key's requests per hour, client networks, last address and route "
            "(`authz keys usage`), written with the last-use times; `off` counts nothing", shown="on"),
    Setting("AUTHZ_USAGE_RETENTION_DAYS", "usage_retention_days", _bounded(1, 3650, "days", whole=True), 90,
            "days API key usage is kept; older hours, networks and last requests are pruned"),
    # Anomalies (authz.webhooks.anomalies): judged as usage is written, against the store.
    Setting("AUTHZ_ANOMALY_LEARNING_DAYS", "anomaly_learning_days", _bounded(0, 365, "days"), 7.0,
            "days of a key's history before a client network it was never seen from, or an hour far above "
            "its median, is an anomaly (a new key's first networks and bursts are its normal)"),
    Setting("AUTHZ_ANOMALY_VOLUME_FACTOR", "anomaly_volume_factor", _bounded(1.5, 1000, "(a factor)"), 10.0,
            "an hour's requests above this many times the key's median hour (over its trailing days) is "
            "an anomaly"),
    Setting("AUTHZ_ANOMALY_VOLUME_MIN", "anomaly_volume_min", _bounded(1, 1e9, "requests", whole=True), 1000,
            "fewer requests in an hour than this is never a volume anomaly (tiny keys do not alert)"),
    Setting("AUTHZ_ANOMALY_TRAILING_DAYS", "anomaly_trailing_days", _bounded(1, 90, "days", whole=True), 7,
            "the hours a key's median hour is taken over"),
    Setting("AUTHZ_ISSUER", "issuer", _text, "authz", "`iss` of X-Auth-Token"),
    Setting("AUTHZ_IDENTITY_TOKEN", "identity_token_everywhere", _identity_token_everywhere, False,
            "`routes` (where a route says `identity_token`) or `all`", shown="routes"),
    Setting("AUTHZ_IDENTITY_TOKEN_TTL", "identity_token_ttl", _bounded(1, 300, "seconds"), 60.0,
            "lifetime of X-Auth-Token, 1 to 300 seconds"),
    Setting("AUTHZ_IDENTITY_TOKEN_AUDIENCE", "identity_token_audience", _text, None,
            "`aud` of X-Auth-Token"),
    Setting("AUTHZ_DECISION_LOG", "decision_log", _text, "stderr", "`stderr`, a file path, or `off`"),
    Setting("AUTHZ_DECISION_LOG_ALLOW_SAMPLE", "decision_log_allow_sample", _bounded(0, 1, "(a share)"), 1.0,
            "share of allows logged (denies always are)"),
    Setting("AUTHZ_TARGET_ALLOW", "target_allow", _target_rules, frozenset(),
            "request-target firewall rules to relax, comma-separated (see docs/contract.md, "
            "\"Request-target firewall\"); unknown names refuse to start"),
    # Bounded: each extra certificate is parsing and signature work an unauthenticated
    # client can ask for; 64 is far beyond any real PKI.
    Setting("AUTHZ_MAX_CHAIN_LENGTH", "max_chain_length", _bounded(2, MAX_CHAIN, "certificates", whole=True), 16,
            f"most certificates in a client chain, leaf and root included (2 to {MAX_CHAIN})"),
    Setting("AUTHZ_PASSWORD_USER_FAILURES", "password_user_failures",
            _bounded(1, 10_000, "(a whole number)", whole=True), 10,
            "failed password checks per user name per minute (per worker) before checks are refused "
            "without a KDF run"),
    Setting("AUTHZ_PASSWORD_ADDRESS_FAILURES", "password_address_failures",
            _bounded(1, 100_000, "(a whole number)", whole=True), 30, "the same per client address"),
    Setting("AUTHZ_KDF_CONCURRENCY", "kdf_concurrency", _bounded(1, 256, "(a whole number)", whole=True), 2,
            "password verifications at once per worker, one of them kept for attempts with no failure "
            "on record for the name or the address; more are refused, not queued"),
    Setting("AUTHZ_WEBHOOK_URL", "webhook_url", _webhook_url, None,
            "where events are POSTed (keys expiring in 30, 7, 1 days, expired, grace periods ended; anomalies), "
            "signed with `AUTHZ_WEBHOOK_SECRET`: `https://…`, or `http://` to a loopback host"),
    Setting("AUTHZ_WEBHOOK_SECRET", "webhook_secret", _webhook_secret, None,
            "the webhook's HMAC-SHA256 key: `whsec_` + base64 of 24 to 64 random bytes "
            "(`authz webhooks secret` makes one); required with `AUTHZ_WEBHOOK_URL`"),
    Setting("AUTHZ_WEBHOOK_INTERVAL", "webhook_interval", _bounded(0.1, 3600, "seconds"), 10.0,
            "seconds between a server process's looks for expiry events and deliveries due; a failed delivery "
            "is retried after as long, then twice as long each time (at most 6 h), and given up after 3 days"),
)

SETTINGS: dict[str, Setting] = {setting.name: setting for setting in _TABLE}
"""Every AUTHZ_* variable by name, in the order the README lists them."""

# Not a Settings field: read by prometheus_client itself, and by authz.serve before
# that library is imported. Listed so that the README's table is complete.
FOREIGN_VARIABLES: tuple[tuple[str, str], ...] = (
    ("PROMETHEUS_MULTIPROC_DIR", "a directory for the workers' metrics (optional: `authz serve` and "
                                 "`wsgi:app` set one up themselves)"),
)


@dataclass(frozen=True)
class Settings:
    db_path: str | Path = SETTINGS["AUTHZ_DB"].default
    policy_dir: Path = SETTINGS["AUTHZ_POLICY_DIR"].default
    trusted_proxies: tuple[str, ...] = SETTINGS["AUTHZ_TRUSTED_PROXIES"].default
    proxy_secret: str | None = SETTINGS["AUTHZ_PROXY_SECRET"].default
    last_used_interval: float = SETTINGS["AUTHZ_LAST_USED_INTERVAL"].default
    max_staleness: float = SETTINGS["AUTHZ_MAX_STALENESS"].default
    key_usage: bool = SETTINGS["AUTHZ_KEY_USAGE"].default
    usage_retention_days: int = SETTINGS["AUTHZ_USAGE_RETENTION_DAYS"].default
    anomaly_learning_days: float = SETTINGS["AUTHZ_ANOMALY_LEARNING_DAYS"].default
    anomaly_volume_factor: float = SETTINGS["AUTHZ_ANOMALY_VOLUME_FACTOR"].default
    anomaly_volume_min: int = SETTINGS["AUTHZ_ANOMALY_VOLUME_MIN"].default
    anomaly_trailing_days: int = SETTINGS["AUTHZ_ANOMALY_TRAILING_DAYS"].default
    issuer: str = SETTINGS["AUTHZ_ISSUER"].default
    identity_token_ttl: float = SETTINGS["AUTHZ_IDENTITY_TOKEN_TTL"].default
    identity_token_audience: str | None = SETTINGS["AUTHZ_IDENTITY_TOKEN_AUDIENCE"].default
    identity_token_everywhere: bool = SETTINGS["AUTHZ_IDENTITY_TOKEN"].default
    decision_log: str = SETTINGS["AUTHZ_DECISION_LOG"].default
    decision_log_allow_sample: float = SETTINGS["AUTHZ_DECISION_LOG_ALLOW_SAMPLE"].default
    # Request-target firewall rules relaxed for this deployment (request.TARGET_RULES).
    target_allow: frozenset[str] = SETTINGS["AUTHZ_TARGET_ALLOW"].default
    max_chain_length: int = SETTINGS["AUTHZ_MAX_CHAIN_LENGTH"].default
    password_user_failures: int = SETTINGS["AUTHZ_PASSWORD_USER_FAILURES"].default
    password_address_failures: int = SETTINGS["AUTHZ_PASSWORD_ADDRESS_FAILURES"].default
    kdf_concurrency: int = SETTINGS["AUTHZ_KDF_CONCURRENCY"].default
    webhook_url: str | None = SETTINGS["AUTHZ_WEBHOOK_URL"].default
    webhook_secret: str | None = field(default=SETTINGS["AUTHZ_WEBHOOK_SECRET"].default, repr=False)
    webhook_interval: float = SETTINGS["AUTHZ_WEBHOOK_INTERVAL"].default
    trusted: TrustedNetworks = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Checked here, not in the parsers, so that Settings(...) built in code (tests,
        # bench) is held to the same rules as the environment.
        try:
            trusted = TrustedNetworks(self.trusted_proxies)
        except ValueError as exc:
            raise SettingsError(f"AUTHZ_TRUSTED_PROXIES: {exc}") from None
        object.__setattr__(self, "trusted", trusted)
        if not 2 <= self.max_chain_length <= MAX_CHAIN:
            raise SettingsError(f"AUTHZ_MAX_CHAIN_LENGTH must be from 2 to {MAX_CHAIN} certificates")
        if self.webhook_url is not None and self.webhook_secret is None:
            raise SettingsError("AUTHZ_WEBHOOK_URL is set but AUTHZ_WEBHOOK_SECRET is not: events are never sent "
                                "unsigned (`authz webhooks secret` makes one)")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Settings from ``env`` (default: the process environment); ``overrides`` that
        are not None win (CLI flags). Raises ``SettingsError`` on the first bad value."""
        env = os.environ if env is None else env
        values = {setting.field: setting.read(env) for setting in _TABLE}
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    def with_(self, **changes: Any) -> Settings:
        return replace(self, **changes)


def default_from_env(name: str) -> Callable[[], Any]:
    """A click ``default=`` for the option that overrides ``name``: the variable's value
    when the command runs, else the table's default (click then never reads it itself)."""
    setting = SETTINGS[name]
    return lambda: setting.read(os.environ)


def environment_secret(variable: str) -> str | None:
    """A secret the policy names by its environment variable (``secret_env``,
    ``client_secret_env``): policies hold the variable's name, never the value."""
    return os.environ.get(variable) or None


def markdown_table() -> str:
    """The README's configuration table, rendered from ``SETTINGS``."""
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    for setting in _TABLE:
        shown = setting.default_text
        rows.append(f"| `{setting.name}` | {f'`{shown}`' if shown else 'unset'} | {setting.doc} |")
    rows += [f"| `{name}` | unset | {doc} |" for name, doc in FOREIGN_VARIABLES]
    return "\n".join(rows) + "\n"


if __name__ == "__main__":
    print(markdown_table(), end="")
