"""The composition root: the one place that builds a running authz from its settings.

The WSGI app (``authz.app``), the gRPC server (``authz.adapters.envoy_grpc``) and the
start-up check of ``authz serve`` all call ``build_state``: the store, the decision
engine (the policy from its files, else the last good snapshot, and the identity-token
signer), the policy reloader and the decision log, wired together once. Nothing else
constructs them for serving, so a new front door gets the same service by calling it.

Starting refuses, with every problem listed, on a missing or outdated store
(``StoreError``), an invalid policy with no snapshot to fall back on (``PolicyError``)
and a bad setting (``SettingsError``): all ``AuthzError``, one message for the operator.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from authz.authenticators import Context
from authz.authenticators.password_guard import PasswordGuard
from authz.config import Settings
from authz.engine import DecisionEngine
from authz.engine.identity_token import IdentitySigner
from authz.observability import metrics
from authz.observability.decision_log import DecisionLog
from authz.policy import PolicyError
from authz.policy.reloader import PolicyReloader
from authz.store import ServingStore, Store, StoreError, open_store, serving_store
from authz.webhooks.anomalies import AnomalyDetector, Thresholds
from authz.webhooks.runner import WebhookRunner


@dataclass
class AuthzState:
    """Everything a front door needs to answer: what ``build_state`` wired together."""

    settings: Settings
    store: ServingStore
    engine: DecisionEngine
    reloader: PolicyReloader
    decision_log: DecisionLog
    # The store itself (``store`` may be a Replica of it): what is counted at scrape time
    # and where the webhook runner reads and writes; the runner is None without a webhook.
    shared: Store | None = field(default=None, repr=False)
    webhooks: WebhookRunner | None = None

    def start_background(self) -> None:
        """What a front door runs beside serving, in this process: the webhook runner."""
        if self.webhooks is not None:
            self.webhooks.start()


def build_engine(settings: Settings, store: ServingStore, context: Context | None = None
                 ) -> tuple[DecisionEngine, PolicyError | None]:
    """The policy (the files, else the last good snapshot, else refuse) and the signer;
    the error is the files' problem when a snapshot is served instead."""
    context = context or Context(store=store)
    policy, error = PolicyReloader.initial_policy(settings.policy_dir, context, store.policy_snapshots)
    signer = IdentitySigner(store, settings.issuer, settings.identity_token_ttl, settings.identity_token_audience)
    wants_token = settings.identity_token_everywhere or any(
        r.options.get("identity_token") for r in policy.routes.routes)
    if wants_token and store.signing_keys.active() is None:
        raise StoreError("X-Auth-Token is configured but the store has no signing key: "
                         "run `authz signing-keys rotate`")
    if store.signing_keys.active() is None and any(
            leaf.dpop_nonce for r in policy.routes.routes for leaf in r.requirement.leaves()):
        raise StoreError("a route requires DPoP server nonces (dpop_nonce), which are derived from the signing "
                         "key, but the store has none: run `authz signing-keys rotate`")
    return DecisionEngine(policy, signer, settings.identity_token_everywhere), error


def build_state(settings: Settings | None = None) -> AuthzState:
    """Store, engine, reloader and decision log for a front door (the WSGI app or the
    gRPC server), from ``settings`` or else the environment."""
    settings = settings or Settings.from_env()
    shared = open_store(settings.db_path, last_used_interval=settings.last_used_interval, serving=True,
                        usage_retention=settings.usage_retention_days * 86400.0)
    store = serving_store(shared, settings.max_staleness)
    try:
        shared.check_ready()
        context = Context(store=store, max_chain_length=settings.max_chain_length, password_guard=PasswordGuard(
            settings.password_user_failures, settings.password_address_failures, settings.kdf_concurrency))
        stamp = PolicyReloader.policy_files_stamp(settings.policy_dir)
        engine, error = build_engine(settings, store, context)
    except BaseException:
        store.close()  # a refused start leaves no pool reconnecting behind it
        raise
    reloader = PolicyReloader(engine, settings.policy_dir, context, stamp_before_load=stamp,
                              on_result=metrics.reload_result)
    reloader.error = error
    metrics.policy_revision(engine.policy.revision)
    decision_log = DecisionLog(settings.decision_log, settings.decision_log_allow_sample)
    if settings.key_usage:  # anomalies are judged from usage, in the thread that writes it
        shared.last_used.after_write = AnomalyDetector(shared, Thresholds.from_settings(settings), decision_log.event,
                                                       announce=settings.webhook_url is not None).look
    return AuthzState(settings, store, engine, reloader, decision_log,
                      shared=shared, webhooks=WebhookRunner.from_settings(settings, shared))
