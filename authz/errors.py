"""The one base class for every error authz reports to a person.

Each layer raises its own subclass (a policy problem, a store problem, a malformed
request, a bad setting); the CLI's command wrapper and the servers' start-up catch
``AuthzError`` and print its message as one line, never a traceback. Errors that are
not ``AuthzError`` are bugs, and keep their traceback.
"""

from __future__ import annotations


class AuthzError(Exception):
    """An error whose message is meant for the operator, complete on one line."""
