-- 0004_webpush_revoked: live and revoked push subscriptions indexed apart.
--
-- A device's subscriptions are listed (and counted, at every subscribe)
-- through an index of the live ones only, so that revoked rows, however
-- many, are never read; the purge of revoked rows past their retention
-- walks an index of the revoked ones only.
CREATE INDEX webpush_subscriptions_live ON webpush_subscriptions (device_id, id) WHERE revoked_at IS NULL;
CREATE INDEX webpush_subscriptions_revoked ON webpush_subscriptions (revoked_at) WHERE revoked_at IS NOT NULL;
