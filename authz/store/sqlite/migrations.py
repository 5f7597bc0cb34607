"""Schema migrations, applied in order; ``PRAGMA user_version`` records how far.

Never edit a released migration: append a new one.
"""

MIGRATIONS: list[list[str]] = [
    [
        """CREATE TABLE principals (
            id INTEGER PRIMARY KEY,
            name TEXT NOT NULL UNIQUE,
            kind TEXT NOT NULL CHECK (kind IN ('user', 'client', 'service')),
            scopes TEXT NOT NULL DEFAULT '',
            roles TEXT NOT NULL DEFAULT '',
            password_hash TEXT,
            disabled INTEGER NOT NULL DEFAULT 0,
            created_at REAL NOT NULL,
            updated_at REAL NOT NULL
        )""",
        """CREATE TABLE api_keys (
            id TEXT PRIMARY KEY,
            principal_id INTEGER NOT NULL REFERENCES principals(id),
            hash TEXT NOT NULL UNIQUE,
            display TEXT NOT NULL,
            env TEXT NOT NULL CHECK (env IN ('live', 'test')),
            scopes TEXT NOT NULL DEFAULT '',
            allow_ips TEXT NOT NULL DEFAULT '',
            status TEXT NOT NULL DEFAULT 'active'
                CHECK (status IN ('active', 'deprecated', 'revoked')),
            created_at REAL NOT NULL,
            expires_at REAL,
            revoked_at REAL,
            last_used_at REAL,
            rotated_from TEXT REFERENCES api_keys(id),
            replaced_by TEXT REFERENCES api_keys(id)
        )""",
        "CREATE INDEX api_keys_principal ON api_keys(principal_id)",
        # Revoked tokens (jti) and certificates (fingerprint, issuer+serial); rows are
        # purged once the credential they name has expired anyway.
        """CREATE TABLE revocations (
            kind TEXT NOT NULL,
            issuer TEXT NOT NULL DEFAULT '',
            value TEXT NOT NULL,
            expires_at REAL,
            created_at REAL NOT NULL,
            PRIMARY KEY (kind, issuer, value)
        )""",
    ],
    [
        # Client certificates registered to a principal (mtls principal_from: registered).
        """CREATE TABLE certificates (
            fingerprint TEXT PRIMARY KEY,
            principal_id INTEGER NOT NULL REFERENCES principals(id),
            subject TEXT,
            not_after REAL,
            created_at REAL NOT NULL
        )""",
        "CREATE INDEX certificates_principal ON certificates(principal_id)",
    ],
    [
        # Keys authz signs X-Auth-Token with. The newest unretired key signs; retired
        # keys stay published (JWKS) until every token they signed has expired.
        """CREATE TABLE signing_keys (
            kid TEXT PRIMARY KEY,
            algorithm TEXT NOT NULL,
            private_pem TEXT NOT NULL,
            public_jwk TEXT NOT NULL,
            created_at REAL NOT NULL,
            retired_at REAL,
            publish_until REAL
        )""",
    ],
    [
        # The last good policy revisions, so that a worker started while the files are
        # broken serves the last good revision instead of nothing or a partial one.
        """CREATE TABLE policy_snapshots (
            revision TEXT PRIMARY KEY,
            directory TEXT NOT NULL,
            files TEXT NOT NULL,
            created_at REAL NOT NULL
        )""",
    ],
    [
        # Every write that changes what a replica serves appends here in its own
        # transaction (BEGIN IMMEDIATE serializes writers, so ids are in commit order).
        """CREATE TABLE change_log (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            kind TEXT NOT NULL,
            ref TEXT NOT NULL,
            at REAL NOT NULL
        )""",
    ],
    [
        # Publishable keys (pk_…): never secret, accepted only from the browser origins
        # listed (space-separated, as authz.credentials.origins writes them). Existing
        # keys are secret keys.
        "ALTER TABLE api_keys ADD COLUMN publishable INTEGER NOT NULL DEFAULT 0 CHECK (publishable IN (0, 1))",
        "ALTER TABLE api_keys ADD COLUMN origins TEXT NOT NULL DEFAULT ''",
    ],
    [
        # API key usage, written in batches by serving processes (authz.store.usage_rows):
        # requests per key and hour, the client networks a key was presented from, and
        # its latest request. Pruned past AUTHZ_USAGE_RETENTION_DAYS (the indexes on
        # time serve the pruning, and later the "last hours of every key" reads).
        """CREATE TABLE key_usage_hours (
            key_id TEXT NOT NULL,
            hour INTEGER NOT NULL,
            allowed INTEGER NOT NULL DEFAULT 0,
            denied INTEGER NOT NULL DEFAULT 0,
            PRIMARY KEY (key_id, hour)
        ) WITHOUT ROWID""",
        "CREATE INDEX key_usage_hours_hour ON key_usage_hours(hour)",
        """CREATE TABLE key_networks (
            key_id TEXT NOT NULL,
            network TEXT NOT NULL,
            first_seen REAL NOT NULL,
            last_seen REAL NOT NULL,
            PRIMARY KEY (key_id, network)
        ) WITHOUT ROWID""",
        "CREATE INDEX key_networks_last_seen ON key_networks(last_seen)",
        """CREATE TABLE key_last_requests (
            key_id TEXT PRIMARY KEY,
            at REAL NOT NULL,
            allowed INTEGER NOT NULL CHECK (allowed IN (0, 1)),
            client_ip TEXT,
            route TEXT,
            after_rotation INTEGER NOT NULL DEFAULT 0
        )""",
        "CREATE INDEX key_last_requests_at ON key_last_requests(at)",
    ],
    [
        # Expiry warnings: keys crossing a threshold (30, 7, 1 days left) are found, and
        # the /metrics gauge counted, by a range on expires_at; status is in the index so
        # that the count reads the index alone.
        "CREATE INDEX api_keys_expiry ON api_keys(expires_at, status)",
        # Events for the operator's webhook, kept until delivered (authz.webhooks): id is
        # the delivery id, body the exact JSON signed and sent. A deliverer leases due
        # rows (lease_until, claim) so that only one sends each.
        """CREATE TABLE webhook_outbox (
            id TEXT PRIMARY KEY,
            type TEXT NOT NULL,
            body TEXT NOT NULL,
            state TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'delivered', 'failed')),
            created_at REAL NOT NULL,
            attempts INTEGER NOT NULL DEFAULT 0,
            next_attempt_at REAL NOT NULL,
            lease_until REAL,
            claim TEXT,
            finished_at REAL,
            last_error TEXT
        )""",
        "CREATE INDEX webhook_outbox_due ON webhook_outbox(state, next_attempt_at)",
        # Up to when each producer of events has looked (the expiry scan): a span of time
        # is looked at once, whatever the number of workers and replicas.
        """CREATE TABLE webhook_cursors (
            name TEXT PRIMARY KEY,
            at REAL NOT NULL
        )""",
    ],
    [
        # One-time values seen within their window (DPoP proof ids): a value is accepted
        # once, by whichever worker sees it first. Not copied by `authz db copy`.
        """CREATE TABLE nonces (
            scope TEXT NOT NULL,
            value TEXT NOT NULL,
            expires_at REAL NOT NULL,
            PRIMARY KEY (scope, value)
        )""",
        "CREATE INDEX nonces_expiry ON nonces(expires_at)",
    ],
    [
        # API key anomalies (authz.store.anomaly_rows): the id is derived from key, kind
        # and span, so the same anomaly noticed twice is one row. acked_at: when an
        # operator acknowledged it (`authz keys anomalies --ack ID`).
        """CREATE TABLE key_anomalies (
            id TEXT PRIMARY KEY,
            key_id TEXT NOT NULL,
            kind TEXT NOT NULL,
            span TEXT NOT NULL,
            at REAL NOT NULL,
            detail TEXT NOT NULL,
            acked_at REAL
        )""",
        "CREATE INDEX key_anomalies_at ON key_anomalies(at)",
        "CREATE INDEX key_anomalies_key ON key_anomalies(key_id, acked_at)",
        # Per key: what an open anomaly does to it ('deny': refused until acknowledged).
        "ALTER TABLE api_keys ADD COLUMN on_anomaly TEXT NOT NULL DEFAULT 'allow' "
        "CHECK (on_anomaly IN ('allow', 'deny'))",
    ],
    [
        # Signed API requests (RFC 9421, authz.authenticators.message_signatures): a key's
        # signing algorithm and its verification material: an Ed25519 public key (SPKI
        # PEM), or an HMAC secret (base64), kept as the store keeps authz's own signing
        # keys (signing_keys.private_pem), since verifying needs the secret itself.
        "ALTER TABLE api_keys ADD COLUMN signing_alg TEXT CHECK (signing_alg IN ('hmac-sha256', 'ed25519'))",
        "ALTER TABLE api_keys ADD COLUMN signing_key TEXT",
    ],
]

LATEST = len(MIGRATIONS)
