"""The decision log: one JSON object per line per decision — denies always, allows
sampled (``AUTHZ_DECISION_LOG_ALLOW_SAMPLE``) — to stderr, a file, or nowhere
(``AUTHZ_DECISION_LOG``). It names the credential by key id or certificate
fingerprint, never by its secret."""

from __future__ import annotations

import json
import logging
import random
import sys
import time
from datetime import UTC, datetime

from authz.decision import Decision
from authz.request import CheckRequest

_log = logging.getLogger("authz.decisions")
_log.propagate = False


class DecisionLog:
    def __init__(self, target: str = "stderr", allow_sample: float = 1.0) -> None:
        self.enabled = target != "off"
        self.allow_sample = allow_sample
        if self.enabled and not _log.handlers:
            handler = logging.StreamHandler(sys.stderr) if target == "stderr" else logging.FileHandler(target)
            handler.setFormatter(logging.Formatter("%(message)s"))
            _log.addHandler(handler)
            _log.setLevel(logging.INFO)

    def record(self, decision: Decision, request: CheckRequest | None, request_id: str | None,
               started: float) -> None:
        if not self.enabled or (decision.allowed and random.random() >= self.allow_sample):
            return
        principal = decision.principal
        entry = {
            "ts": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "request_id": request_id,
            "route": decision.route,
            "decision": "allow" if decision.allowed else "deny",
            "status": decision.status,
            "reason": str(decision.reason) if decision.reason else None,
            "detail": decision.detail or None,
            "principal": principal.id if principal else None,
            "methods": decision.methods,
            "credential": next((i.credential for i in decision.identities if i.credential), None),
            "client_ip": str(request.client_ip) if request is not None and request.client_ip else None,
            "method": request.method if request is not None else None,
            "path": request.path if request is not None else None,
            "latency_us": int((time.perf_counter() - started) * 1_000_000),
            "policy_revision": decision.policy_revision,
        }
        _log.info(json.dumps(entry, separators=(",", ":")))
