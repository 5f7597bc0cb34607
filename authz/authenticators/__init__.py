"""Authenticators, one module per type behind ``base.Authenticator``."""

from __future__ import annotations

from authz.authenticators.anonymous import AnonymousAuthenticator
from authz.authenticators.api_key import ApiKeyAuthenticator
from authz.authenticators.base import Authenticator, ConfigError, Context
from authz.authenticators.basic import BasicAuthenticator
from authz.authenticators.jwt_bearer import JwtAuthenticator
from authz.authenticators.mtls import MtlsAuthenticator
from authz.authenticators.oauth2_introspection import IntrospectionAuthenticator

TYPES: dict[str, type[Authenticator]] = {
    cls.type: cls
    for cls in (AnonymousAuthenticator, ApiKeyAuthenticator, BasicAuthenticator, JwtAuthenticator,
                IntrospectionAuthenticator, MtlsAuthenticator)
}

# Places a credential can arrive in. A filled slot that no authenticator of the route
# claimed makes "no credentials" into "credentials not accepted here".
CREDENTIAL_SLOTS = ("authorization", "x-api-key")

__all__ = ["CREDENTIAL_SLOTS", "TYPES", "Authenticator", "ConfigError", "Context"]
