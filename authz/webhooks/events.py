"""Webhook events: what any producer hands to the outbox.

An event has a type (``api_key.expiring``; dot-separated lower-case words), data, a
delivery id and the time it happened. The body is Standard Webhooks' recommended shape,
``{"type", "timestamp", "data"}``, serialized once here: the outbox stores those exact
bytes, so every retry sends, and signs, the same body.

**Ids.** A producer that may notice the same thing twice (several workers, a scan
repeated after a crash) passes ``dedupe`` parts, and the id is derived from them: the
outbox keeps the first and ignores the rest. Otherwise the id is random. Either way it
is ``evt_`` and 32 hex digits (no ``.``, which the signed string uses as separator).

**Never a secret.** Data names keys by id and principals by name; no key, hash or
display form ever goes into an event (receivers log what they receive).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
import secrets
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from authz.store.interface import WebhookOutbox
from authz.store.records import NewWebhookEvent

_TYPE = re.compile(r"[a-z][a-z0-9_]{0,31}(\.[a-z][a-z0-9_]{0,31}){1,3}")
MAX_BODY_BYTES = 16 * 1024  # Standard Webhooks asks for less than 20 kB; ours are a few hundred bytes


@dataclass(frozen=True)
class Event:
    type: str
    data: Mapping[str, Any] = field(hash=False)
    id: str
    occurred_at: float

    def body(self) -> str:
        """The JSON sent (compact, keys sorted: the same event gives the same bytes)."""
        stamp = dt.datetime.fromtimestamp(self.occurred_at, dt.UTC).isoformat(timespec="milliseconds")
        return json.dumps({"type": self.type, "timestamp": stamp.replace("+00:00", "Z"), "data": self.data},
                          separators=(",", ":"), sort_keys=True)

    def new(self, now: float | None = None) -> NewWebhookEvent:
        """The outbox row; ``ValueError`` when the body is larger than ``MAX_BODY_BYTES``."""
        body = self.body()
        if len(body.encode()) > MAX_BODY_BYTES:
            raise ValueError(f"webhook event {self.type} is {len(body.encode())} bytes, more than {MAX_BODY_BYTES}")
        return NewWebhookEvent(self.id, self.type, body, time.time() if now is None else now)


def event(type: str, data: Mapping[str, Any], *, dedupe: Sequence[str] | None = None,
          at: float | None = None) -> Event:
    """An event of ``type`` (``ValueError`` if malformed); ``dedupe``: the parts that make
    it the same event of that type wherever it is noticed (e.g. a key id and a threshold)."""
    if not _TYPE.fullmatch(type):
        raise ValueError(f"webhook event type {type!r}: dot-separated lower-case words, like api_key.expiring")
    return Event(type, data, stable_id(type, *dedupe) if dedupe is not None else new_id(),
                 time.time() if at is None else at)


def stable_id(*parts: str) -> str:
    """The delivery id of the event these parts name (the unit separator keeps parts apart)."""
    return "evt_" + hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:32]


def new_id() -> str:
    return "evt_" + secrets.token_hex(16)


def enqueue(outbox: WebhookOutbox, events: Sequence[Event]) -> int:
    """Hand events to the outbox (one transaction); how many were new. The generic way
    in for every producer: the deliverer sends them, at least once."""
    if not events:
        return 0
    now = time.time()
    return outbox.enqueue([e.new(now) for e in events])
