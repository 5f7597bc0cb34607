"""Webhooks: events about keys, delivered to the operator's endpoint, at least once.

- ``events``: what a producer hands over — a type, data without secrets, a delivery id
  (derived from what makes the event unique, or random) — and ``enqueue``, the one way
  in (the expiry scan uses it; so will anomaly detection).
- ``expiry``: keys whose remaining lifetime crosses 30, 7 or 1 days, that expired, or
  whose grace period ended, found by a cursor over time (each span looked at once).
- ``delivery``: leases due events from the store's outbox, POSTs them signed, retries
  with exponential backoff, gives up after three days.
- the signature is ``authz.credentials.webhook_signature`` (Standard Webhooks:
  ``webhook-id``, ``webhook-timestamp``, ``webhook-signature``), a format like the
  others there, so that settings can check the secret.
- ``runner``: who does it — a thread in each serving process, or ``authz webhooks
  deliver`` from cron.

The outbox is a table of the store (``authz.store.interface.WebhookOutbox``): an event
enqueued survives restarts until it is delivered or given up.
"""
