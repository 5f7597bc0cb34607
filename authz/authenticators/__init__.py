"""Authenticators, one module per type behind ``base.Authenticator``."""

from __future__ import annotations

from authz.authenticators.anonymous import AnonymousAuthenticator
from authz.authenticators.api_key import ApiKeyAuthenticator
from authz.authenticators.base import Authenticator, ConfigError, Context, Lint, Slot
from authz.authenticators.basic import BasicAuthenticator
from authz.authenticators.jwt_bearer import JwtAuthenticator
from authz.authenticators.mtls import MtlsAuthenticator
from authz.authenticators.oauth2_introspection import IntrospectionAuthenticator

TYPES: dict[str, type[Authenticator]] = {
    cls.type: cls
    for cls in (AnonymousAuthenticator, ApiKeyAuthenticator, BasicAuthenticator, JwtAuthenticator,
                IntrospectionAuthenticator, MtlsAuthenticator)
}

# The header slots the types read, name -> header spelling, in name order. A filled slot
# that no authenticator of the route claimed makes "no credentials" into "credentials
# not accepted here".
CREDENTIAL_SLOTS: dict[str, str] = {
    slot.name: slot.header for slot in sorted({slot for cls in TYPES.values() for slot in cls.slots}) if slot.header
}
# Slots that are not request headers: never named for a proxy to strip.
NON_HEADER_SLOTS = frozenset(slot.name for cls in TYPES.values() for slot in cls.slots if slot.header is None)

__all__ = ["CREDENTIAL_SLOTS", "NON_HEADER_SLOTS", "TYPES", "Authenticator", "ConfigError", "Context", "Lint",
           "Slot"]
