-- 0002_webpush: push subscriptions Herald hosts (store.Subscription, RFC 8030).
--
-- token_hash is the key a push looks up by (the token itself is never
-- stored). device_id has no foreign key, as elsewhere in this schema: a
-- subscription outlives a deleted device, and a push to it then finds the
-- device gone and is answered 410, as for a revoked one.
CREATE TABLE webpush_subscriptions (
    token_hash     bytea PRIMARY KEY,
    id             text COLLATE "C" NOT NULL,
    device_id      text COLLATE "C" NOT NULL,
    app            text COLLATE "C" NOT NULL,
    app_server_key bytea,              -- NULL: pushes need no VAPID signature
    label          text NOT NULL DEFAULT '',
    created_at     timestamptz NOT NULL,
    revoked_at     timestamptz,        -- NULL while live
    UNIQUE (device_id, id)
);
