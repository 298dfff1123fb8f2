-- Transactional outbox: events written in the same transaction as the change they announce,
-- published to NATS JetStream by the relay, pruned some time after publishing.
CREATE TABLE event_outbox (
    -- Assigned at insert; the relay publishes pending events in this order.
    seq          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- Also the Nats-Msg-Id, so a republished event is dropped by JetStream de-duplication.
    event_id     UUID NOT NULL UNIQUE,
    -- Without the deployment's subject prefix, e.g. evt.token.stored.v1.
    subject      TEXT NOT NULL,
    -- The JSON envelope exactly as published.
    payload      TEXT NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL,
    published_at TIMESTAMPTZ
);
CREATE INDEX event_outbox_pending_idx ON event_outbox (seq) WHERE published_at IS NULL;
CREATE INDEX event_outbox_published_at_idx ON event_outbox (published_at) WHERE published_at IS NOT NULL;

-- An app uninstall names the shop by platform and platform_shop_id.
CREATE INDEX platform_tokens_platform_shop_idx ON platform_tokens (platform_name, platform_shop_id);
