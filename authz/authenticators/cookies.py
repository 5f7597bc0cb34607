"""Reading one credential cookie so that no other parser could read another value.

A token in a cookie is read by werkzeug's parser (RFC 6265 with the quoting browsers
and frameworks accept), never a hand-written one. But authz is one of several parsers of
the same ``Cookie`` header — the upstream framework reads it too, and frameworks differ:
PHP turns ``.``, space and ``[`` in a name into ``_`` and percent-decodes names; ASP.NET
compares names case-insensitively; a server that receives several ``Cookie`` headers
joins them with ``,`` (gunicorn, Envoy for HTTP/1.1), which RFC 6265 parsers do not
split on. So the cookie is taken only when every such reading agrees on it:

- its name appears once, also when names are compared as PHP or ASP.NET would and when
  the header is split on ``,`` as well as ``;``;
- its value, as werkzeug read it, is exactly the characters after ``=`` (no quotes, no
  escapes, nothing a comma-joined header could have glued on) and only base64url
  characters and dots, which is all a compact JWT is made of.

Anything else is a ``CookieError`` (the caller denies, saying why); a cookie that is not
there at all, or is empty (a logged-out browser's), is None. Sizes are bounded before
any parsing. Values are never put in an error message: they are credentials.
"""

from __future__ import annotations

import re
from urllib.parse import unquote

from werkzeug.http import parse_cookie

MAX_COOKIE_HEADER = 16384  # what Headers already admits for one header; said here for the reader
MAX_COOKIES = 200  # browsers keep 180 cookies a domain at most (Chrome)
_VALUE = re.compile(r"[A-Za-z0-9_\-.]+")
_SEPARATORS = re.compile(r"[;,]")
# RFC 6265 cookie-name: an RFC 9110 token.
NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,64}")


class CookieError(ValueError):
    """The credential cookie cannot be read unambiguously; the message says why and
    never carries the value."""


def _spelling(name: str) -> str:
    """A cookie name as the most lenient framework reads it (``str.replace``: several
    times faster than ``str.translate`` on a whole header)."""
    name = name.strip()
    if "%" in name:
        name = unquote(name)
    return name.replace(".", "_").replace(" ", "_").replace("[", "_").lower()


def read_cookie(header: str | None, name: str) -> str | None:
    """The value of cookie ``name`` in a ``Cookie`` header, None when it is absent or
    empty; ``CookieError`` when it could be read otherwise by another parser."""
    if not header:
        return None
    wanted = _spelling(name)
    if wanted not in _spelling(header):  # cheap: most requests carry other cookies only
        return None
    if len(header) > MAX_COOKIE_HEADER:
        raise CookieError(f"Cookie header longer than {MAX_COOKIE_HEADER} characters")
    pairs = _SEPARATORS.split(header)
    if len(pairs) > MAX_COOKIES:
        raise CookieError(f"more than {MAX_COOKIES} cookies")
    raw = [value.strip() for name, _, value in (pair.partition("=") for pair in pairs) if _spelling(name) == wanted]
    if not raw:
        return None
    if len(raw) > 1:
        raise CookieError(f"cookie {name} sent more than once (or under a spelling a framework reads as it)")
    values = parse_cookie(header).getlist(name)
    if len(values) != 1 or values[0] != raw[0]:
        raise CookieError(f"cookie {name} is ambiguous (quoted, escaped, or in several Cookie headers)")
    value = values[0]
    if not value:
        return None
    if not _VALUE.fullmatch(value):
        raise CookieError(f"cookie {name} holds characters no token has")
    return value
