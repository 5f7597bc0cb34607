"""Service settings, from the environment (CLI flags override)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from authz.credentials.x509 import MAX_CHAIN
from authz.errors import AuthzError
from authz.request import TARGET_RULES, TrustedNetworks

DEFAULT_TRUSTED = ("127.0.0.1/32", "::1/128")


class SettingsError(AuthzError, ValueError):
    """A setting has a value authz cannot use; the message names the variable."""


@dataclass(frozen=True)
class Settings:
    db_path: Path = Path("authz.db")
    policy_dir: Path = Path("policies")
    trusted_proxies: tuple[str, ...] = DEFAULT_TRUSTED
    proxy_secret: str | None = None
    last_used_interval: float = 30.0
    issuer: str = "authz"
    identity_token_ttl: float = 60.0
    identity_token_audience: str | None = None
    identity_token_everywhere: bool = False
    decision_log: str = "stderr"
    decision_log_allow_sample: float = 1.0
    # Request-target firewall rules relaxed for this deployment (request.TARGET_RULES).
    target_allow: frozenset[str] = frozenset()
    max_chain_length: int = 16  # certificates in a client chain, leaf and root included
    password_user_failures: int = 10
    password_address_failures: int = 30
    kdf_concurrency: int = 2
    trusted: TrustedNetworks = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        try:
            trusted = TrustedNetworks(self.trusted_proxies)
        except ValueError as exc:
            raise SettingsError(f"AUTHZ_TRUSTED_PROXIES: {exc}") from None
        object.__setattr__(self, "trusted", trusted)
        if not 2 <= self.max_chain_length <= MAX_CHAIN:
            raise SettingsError(f"AUTHZ_MAX_CHAIN_LENGTH must be from 2 to {MAX_CHAIN} certificates")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides) -> Settings:
        env = os.environ if env is None else env
        values: dict = {}
        if env.get("AUTHZ_DB"):
            values["db_path"] = Path(env["AUTHZ_DB"])
        if env.get("AUTHZ_POLICY_DIR"):
            values["policy_dir"] = Path(env["AUTHZ_POLICY_DIR"])
        if env.get("AUTHZ_TRUSTED_PROXIES") is not None:
            cidrs = tuple(c.strip() for c in env["AUTHZ_TRUSTED_PROXIES"].split(",") if c.strip())
            values["trusted_proxies"] = cidrs
        if env.get("AUTHZ_PROXY_SECRET"):
            values["proxy_secret"] = env["AUTHZ_PROXY_SECRET"]
        if env.get("AUTHZ_LAST_USED_INTERVAL"):
            try:
                values["last_used_interval"] = float(env["AUTHZ_LAST_USED_INTERVAL"])
            except ValueError:
                raise SettingsError("AUTHZ_LAST_USED_INTERVAL must be a number of seconds") from None
        if env.get("AUTHZ_ISSUER"):
            values["issuer"] = env["AUTHZ_ISSUER"]
        if env.get("AUTHZ_IDENTITY_TOKEN_AUDIENCE"):
            values["identity_token_audience"] = env["AUTHZ_IDENTITY_TOKEN_AUDIENCE"]
        if env.get("AUTHZ_IDENTITY_TOKEN"):
            if env["AUTHZ_IDENTITY_TOKEN"] not in ("routes", "all"):
                raise SettingsError("AUTHZ_IDENTITY_TOKEN must be 'routes' (per route option) or 'all'")
            values["identity_token_everywhere"] = env["AUTHZ_IDENTITY_TOKEN"] == "all"  # noqa: S105
        if env.get("AUTHZ_IDENTITY_TOKEN_TTL"):
            values["identity_token_ttl"] = _number(env, "AUTHZ_IDENTITY_TOKEN_TTL", 1, 300, "seconds")
        if env.get("AUTHZ_DECISION_LOG"):
            values["decision_log"] = env["AUTHZ_DECISION_LOG"]
        if env.get("AUTHZ_DECISION_LOG_ALLOW_SAMPLE"):
            values["decision_log_allow_sample"] = _number(env, "AUTHZ_DECISION_LOG_ALLOW_SAMPLE", 0, 1, "(a share)")
        if env.get("AUTHZ_TARGET_ALLOW"):
            names = frozenset(n.strip() for n in env["AUTHZ_TARGET_ALLOW"].split(",") if n.strip())
            unknown = sorted(names - TARGET_RULES.keys())
            if unknown:
                raise SettingsError(f"AUTHZ_TARGET_ALLOW: unknown rule {unknown[0]!r}; the rules that can be "
                                    f"relaxed are {', '.join(TARGET_RULES)}")
            values["target_allow"] = names
        if env.get("AUTHZ_MAX_CHAIN_LENGTH"):
            # Bounded: each extra certificate is parsing and signature work an unauthenticated
            # client can ask for; 64 is far beyond any real PKI.
            values["max_chain_length"] = int(_number(env, "AUTHZ_MAX_CHAIN_LENGTH", 2, MAX_CHAIN, "certificates"))
        for name, field_name, high in (("AUTHZ_PASSWORD_USER_FAILURES", "password_user_failures", 10_000),
                                       ("AUTHZ_PASSWORD_ADDRESS_FAILURES", "password_address_failures", 100_000),
                                       ("AUTHZ_KDF_CONCURRENCY", "kdf_concurrency", 256)):
            if env.get(name):
                values[field_name] = int(_number(env, name, 1, high, "(a whole number)"))
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    def with_(self, **changes) -> Settings:
        return replace(self, **changes)


def _number(env: Mapping[str, str], name: str, low: float, high: float, unit: str) -> float:
    try:
        value = float(env[name])
    except ValueError:
        value = float("nan")
    if not low <= value <= high:
        raise SettingsError(f"{name} must be a number from {low:g} to {high:g} {unit}")
    return value
