"""``anonymous``: always satisfied, with no identity (public routes, health checks)."""

from __future__ import annotations

from authz.authenticators.base import Authenticator
from authz.decision import Outcome, OutcomeKind
from authz.request import CheckRequest

_ANONYMOUS = Outcome(OutcomeKind.VALID)


class AnonymousAuthenticator(Authenticator):
    type = "anonymous"

    def authenticate(self, request: CheckRequest) -> Outcome:
        return _ANONYMOUS
