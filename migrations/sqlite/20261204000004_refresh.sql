-- Token refresh state (Shopify expiring offline tokens and other OAuth 2.0 platforms).
ALTER TABLE platform_tokens ADD COLUMN refreshable INTEGER NOT NULL DEFAULT 0;
-- NULL while refreshing works; 'reauth_required' after invalid_grant.
ALTER TABLE platform_tokens ADD COLUMN refresh_state TEXT;
ALTER TABLE platform_tokens ADD COLUMN refresh_failures INTEGER NOT NULL DEFAULT 0;
ALTER TABLE platform_tokens ADD COLUMN next_refresh_at TEXT;
ALTER TABLE platform_tokens ADD COLUMN refresh_error TEXT;
-- Lease held by the one process refreshing the token, so replicas share one refresh.
ALTER TABLE platform_tokens ADD COLUMN refresh_lease_owner TEXT;
ALTER TABLE platform_tokens ADD COLUMN refresh_lease_until TEXT;
CREATE INDEX platform_tokens_refresh_due_idx ON platform_tokens (expires_at) WHERE refreshable = 1;
