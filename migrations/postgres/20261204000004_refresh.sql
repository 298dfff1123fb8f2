-- Token refresh state (Shopify expiring offline tokens and other OAuth 2.0 platforms).
ALTER TABLE platform_tokens
    ADD COLUMN refreshable BOOLEAN NOT NULL DEFAULT false,
    -- NULL while refreshing works; 'reauth_required' after invalid_grant.
    ADD COLUMN refresh_state TEXT,
    ADD COLUMN refresh_failures INTEGER NOT NULL DEFAULT 0,
    ADD COLUMN next_refresh_at TIMESTAMPTZ,
    ADD COLUMN refresh_error TEXT,
    -- Lease held by the one process refreshing the token, so replicas share one refresh.
    ADD COLUMN refresh_lease_owner TEXT,
    ADD COLUMN refresh_lease_until TIMESTAMPTZ;
CREATE INDEX platform_tokens_refresh_due_idx ON platform_tokens (expires_at) WHERE refreshable;
