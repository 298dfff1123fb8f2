-- Credentials: one row per (merchant, platform). Ids are UUIDs stored as 16-byte blobs.
CREATE TABLE platform_tokens (
    id                BLOB PRIMARY KEY NOT NULL,
    merchant_id       TEXT NOT NULL,
    platform_name     TEXT NOT NULL,
    platform_shop_id  TEXT NOT NULL,
    domain            TEXT NOT NULL,
    encrypted_token   TEXT NOT NULL,
    encryption_key_id TEXT NOT NULL,
    token_type        TEXT NOT NULL,
    expires_at        TEXT,
    scopes            TEXT,
    last_accessed_by  TEXT,
    last_accessed_at  TEXT,
    access_count      INTEGER NOT NULL DEFAULT 0,
    created_at        TEXT NOT NULL,
    updated_at        TEXT NOT NULL,
    -- Leads with merchant_id, so it also serves lookups by merchant.
    CONSTRAINT platform_tokens_merchant_platform_key UNIQUE (merchant_id, platform_name)
);
CREATE INDEX platform_tokens_platform_name_idx ON platform_tokens (platform_name);
CREATE INDEX platform_tokens_domain_idx ON platform_tokens (domain);

-- The audit trail. No foreign key: a token's history outlives the token.
CREATE TABLE token_access_logs (
    id             BLOB PRIMARY KEY NOT NULL,
    token_id       BLOB,
    merchant_id    TEXT NOT NULL,
    platform_name  TEXT,
    accessed_by    TEXT NOT NULL,
    access_type    TEXT NOT NULL CHECK (access_type IN ('read', 'write', 'delete', 'denied', 'refresh')),
    success        INTEGER NOT NULL,
    error_code     TEXT,
    correlation_id TEXT,
    ip_address     TEXT,
    accessed_at    TEXT NOT NULL
);
CREATE INDEX token_access_logs_token_id_idx ON token_access_logs (token_id);
CREATE INDEX token_access_logs_accessed_by_idx ON token_access_logs (accessed_by);
CREATE INDEX token_access_logs_accessed_at_idx ON token_access_logs (accessed_at);
