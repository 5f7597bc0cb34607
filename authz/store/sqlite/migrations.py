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
]

LATEST = len(MIGRATIONS)
