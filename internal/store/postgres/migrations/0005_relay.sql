-- 0005_relay: relaying messages to the vendors' channels (store.RelayStore):
-- the relay queue, what the vendors answered, the apps' channel settings, a
-- message's channel policy, and one device per vendor address.

-- relay_jobs: one row per message and device due to a vendor channel, or,
-- with device '', a fan-out message whose devices are still to be found
-- (RelayExpand). Keyed by message first, so that a purge drops a message's
-- jobs through the primary key and an expansion that runs again finds the
-- jobs it made; relay_jobs_due lists them in the order RelayDue wants. No
-- foreign key, as elsewhere: Append writes a message's jobs with it, and
-- Sweep, which purges messages, holds the sweep lock exclusively while
-- RelayRetry, RelayDone and RelayExpand hold it shared.
CREATE TABLE relay_jobs (
    seq     bigint NOT NULL,
    device  text COLLATE "C" NOT NULL,
    app     text COLLATE "C" NOT NULL,
    msg_id  text COLLATE "C" NOT NULL,
    channel text NOT NULL,             -- '' for a fan-out job
    due_at  timestamptz NOT NULL,
    attempt integer NOT NULL,          -- sends made so far
    wait    bigint NOT NULL DEFAULT 0, -- a fan-out job's own_first delay in nanoseconds (store.RelayJob.Wait)
    PRIMARY KEY (seq, device)
);
CREATE INDEX relay_jobs_due ON relay_jobs (due_at, seq, device);

-- relay_outcomes: a message's relay counters (store.RelayCounts), one row
-- per channel, result and reason, so that a report reads a few rows however
-- many devices the message reached. result 'waiting' (reason '') counts the
-- jobs waiting for a retry: RelayRetry adds one at a job's first retry,
-- RelayDone takes it off again; a row that drops to zero is deleted.
CREATE TABLE relay_outcomes (
    seq     bigint NOT NULL,
    channel text NOT NULL,
    result  text NOT NULL,
    reason  text NOT NULL,
    count   integer NOT NULL,
    PRIMARY KEY (seq, channel, result, reason)
);

-- channel_configs: an app's settings per vendor channel (and 'delivery',
-- its channel policy), sealed by the caller: the store never sees
-- credentials in the clear.
CREATE TABLE channel_configs (
    app    text COLLATE "C" NOT NULL,
    kind   text COLLATE "C" NOT NULL,
    sealed bytea NOT NULL,
    PRIMARY KEY (app, kind)
);

-- The message's channel policy (push.ChannelPolicy); '' is the app's
-- default. Pending reads it for vendor_only fan-out messages.
ALTER TABLE messages ADD COLUMN channel text NOT NULL DEFAULT '';

-- One device per vendor address and app (push.Channel.Address: the Web Push
-- endpoint, else the token). The expressions must stay those of
-- vendorAddress and holdsAddress in devices.go, or the takeover there
-- cannot use this index. Devices already sharing an address keep it on the newest
-- registration only, the others fall back to Herald's own channel, as
-- CreateDevice and UpdateDevice do from now on. The table is locked against
-- writes first, so that an older node cannot register a duplicate between
-- the clean-up and the index.
LOCK TABLE devices IN SHARE ROW EXCLUSIVE MODE;

WITH ranked AS (
    SELECT id, row_number() OVER (
        PARTITION BY app, channel->>'kind', coalesce(channel->'webpush'->>'endpoint', channel->>'token')
        ORDER BY updated_at DESC, created_at DESC, id DESC) AS n
    FROM devices
    WHERE channel->>'kind' <> 'herald' AND coalesce(channel->'webpush'->>'endpoint', channel->>'token') <> ''
)
UPDATE devices d SET channel = '{"kind":"herald"}'
FROM ranked r WHERE d.id = r.id AND r.n > 1;

CREATE UNIQUE INDEX devices_vendor_address
    ON devices (app, (channel->>'kind'), (coalesce(channel->'webpush'->>'endpoint', channel->>'token')))
    WHERE channel->>'kind' <> 'herald' AND coalesce(channel->'webpush'->>'endpoint', channel->>'token') <> '';
