"""The PostgreSQL schema, applied in order; the ``schema_version`` table records how far.

The same rules as SQLite's (``authz.store.sqlite.migrations``): never edit a released
migration, append a new one; a store newer than this authz is refused. The columns are
SQLite's, typed for PostgreSQL (times are seconds since the epoch, double precision),
so ``authz db copy`` moves rows unchanged.
"""

MIGRATIONS: list[list[str]] = [
    [
        """CREATE TABLE principals (
            id BIGSERIAL PRIMARY KEY,
            name TEXT NOT NULL UNIQUE,
            kind TEXT NOT NULL CHECK (kind IN ('user', 'client', 'service')),
            scopes TEXT NOT NULL DEFAULT '',
            roles TEXT NOT NULL DEFAULT '',
            password_hash TEXT,
            disabled INTEGER NOT NULL DEFAULT 0,
            created_at DOUBLE PRECISION NOT NULL,
            updated_at DOUBLE PRECISION NOT NULL
        )""",
        # Keys point at keys (rotation): checked at commit, so a copy may load them in any order.
        """CREATE TABLE api_keys (
            id TEXT PRIMARY KEY,
            principal_id BIGINT NOT NULL REFERENCES principals(id),
            hash TEXT NOT NULL UNIQUE,
            display TEXT NOT NULL,
            env TEXT NOT NULL CHECK (env IN ('live', 'test')),
            scopes TEXT NOT NULL DEFAULT '',
            allow_ips TEXT NOT NULL DEFAULT '',
            status TEXT NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'deprecated', 'revoked')),
            created_at DOUBLE PRECISION NOT NULL,
            expires_at DOUBLE PRECISION,
            revoked_at DOUBLE PRECISION,
            last_used_at DOUBLE PRECISION,
            rotated_from TEXT REFERENCES api_keys(id) DEFERRABLE INITIALLY DEFERRED,
            replaced_by TEXT REFERENCES api_keys(id) DEFERRABLE INITIALLY DEFERRED
        )""",
        "CREATE INDEX api_keys_principal ON api_keys(principal_id)",
        """CREATE TABLE revocations (
            kind TEXT NOT NULL,
            issuer TEXT NOT NULL DEFAULT '',
            value TEXT NOT NULL,
            expires_at DOUBLE PRECISION,
            created_at DOUBLE PRECISION NOT NULL,
            PRIMARY KEY (kind, issuer, value)
        )""",
        """CREATE TABLE certificates (
            fingerprint TEXT PRIMARY KEY,
            principal_id BIGINT NOT NULL REFERENCES principals(id),
            subject TEXT,
            not_after DOUBLE PRECISION,
            created_at DOUBLE PRECISION NOT NULL
        )""",
        "CREATE INDEX certificates_principal ON certificates(principal_id)",
        """CREATE TABLE signing_keys (
            kid TEXT PRIMARY KEY,
            algorithm TEXT NOT NULL,
            private_pem TEXT NOT NULL,
            public_jwk TEXT NOT NULL,
            created_at DOUBLE PRECISION NOT NULL,
            retired_at DOUBLE PRECISION,
            publish_until DOUBLE PRECISION
        )""",
        """CREATE TABLE policy_snapshots (
            revision TEXT PRIMARY KEY,
            directory TEXT NOT NULL,
            files TEXT NOT NULL,
            created_at DOUBLE PRECISION NOT NULL
        )""",
        # Replicas follow this (authz.store.interface.ChangeFeed). Writers that append take
        # a transaction-level advisory lock first, so ids are handed out in commit order.
        """CREATE TABLE change_log (
            id BIGSERIAL PRIMARY KEY,
            kind TEXT NOT NULL,
            ref TEXT NOT NULL,
            at DOUBLE PRECISION NOT NULL
        )""",
    ],
    [
        # Publishable keys (pk_…), as in SQLite's migration 6. A constant default: no
        # table rewrite, existing keys are secret keys.
        "ALTER TABLE api_keys ADD COLUMN publishable INTEGER NOT NULL DEFAULT 0 CHECK (publishable IN (0, 1))",
        "ALTER TABLE api_keys ADD COLUMN origins TEXT NOT NULL DEFAULT ''",
    ],
    [
        # API key usage, as in SQLite's migration 7 (authz.store.usage_rows).
        """CREATE TABLE key_usage_hours (
            key_id TEXT NOT NULL,
            hour BIGINT NOT NULL,
            allowed BIGINT NOT NULL DEFAULT 0,
            denied BIGINT NOT NULL DEFAULT 0,
            PRIMARY KEY (key_id, hour)
        )""",
        "CREATE INDEX key_usage_hours_hour ON key_usage_hours(hour)",
        """CREATE TABLE key_networks (
            key_id TEXT NOT NULL,
            network TEXT NOT NULL,
            first_seen DOUBLE PRECISION NOT NULL,
            last_seen DOUBLE PRECISION NOT NULL,
            PRIMARY KEY (key_id, network)
        )""",
        "CREATE INDEX key_networks_last_seen ON key_networks(last_seen)",
        """CREATE TABLE key_last_requests (
            key_id TEXT PRIMARY KEY,
            at DOUBLE PRECISION NOT NULL,
            allowed INTEGER NOT NULL CHECK (allowed IN (0, 1)),
            client_ip TEXT,
            route TEXT,
            after_rotation BIGINT NOT NULL DEFAULT 0
        )""",
        "CREATE INDEX key_last_requests_at ON key_last_requests(at)",
    ],
    [
        # Expiry warnings and the webhook outbox, as in SQLite's migration 8.
        "CREATE INDEX api_keys_expiry ON api_keys(expires_at, status)",
        """CREATE TABLE webhook_outbox (
            id TEXT PRIMARY KEY,
            type TEXT NOT NULL,
            body TEXT NOT NULL,
            state TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'delivered', 'failed')),
            created_at DOUBLE PRECISION NOT NULL,
            attempts INTEGER NOT NULL DEFAULT 0,
            next_attempt_at DOUBLE PRECISION NOT NULL,
            lease_until DOUBLE PRECISION,
            claim TEXT,
            finished_at DOUBLE PRECISION,
            last_error TEXT
        )""",
        "CREATE INDEX webhook_outbox_due ON webhook_outbox(state, next_attempt_at)",
        """CREATE TABLE webhook_cursors (
            name TEXT PRIMARY KEY,
            at DOUBLE PRECISION NOT NULL
        )""",
    ],
    [
        # One-time values (DPoP proof ids), as in SQLite's migration 9.
        """CREATE TABLE nonces (
            scope TEXT NOT NULL,
            value TEXT NOT NULL,
            expires_at DOUBLE PRECISION NOT NULL,
            PRIMARY KEY (scope, value)
        )""",
        "CREATE INDEX nonces_expiry ON nonces(expires_at)",
    ],
    [
        # API key anomalies, as in SQLite's migration 10 (authz.store.anomaly_rows).
        """CREATE TABLE key_anomalies (
            id TEXT PRIMARY KEY,
            key_id TEXT NOT NULL,
            kind TEXT NOT NULL,
            span TEXT NOT NULL,
            at DOUBLE PRECISION NOT NULL,
            detail TEXT NOT NULL,
            acked_at DOUBLE PRECISION
        )""",
        "CREATE INDEX key_anomalies_at ON key_anomalies(at)",
        "CREATE INDEX key_anomalies_key ON key_anomalies(key_id, acked_at)",
        # Per key: what an open anomaly does to it ('deny': refused until acknowledged).
        "ALTER TABLE api_keys ADD COLUMN on_anomaly TEXT NOT NULL DEFAULT 'allow' "
        "CHECK (on_anomaly IN ('allow', 'deny'))",
    ],
    [
        # Signed API requests (RFC 9421), as in SQLite's migration 11.
        "ALTER TABLE api_keys ADD COLUMN signing_alg TEXT CHECK (signing_alg IN ('hmac-sha256', 'ed25519'))",
        "ALTER TABLE api_keys ADD COLUMN signing_key TEXT",
    ],
]

LATEST = len(MIGRATIONS)
