-- 0001_init: apps, devices, messages, inbox entries and acknowledgements.
-- store.go documents what each of them means; these comments say why the
-- schema has the shape it has.

-- message_seq gives every message its Seq. Values come from the sequence, not
-- from commit order: a lower Seq can become visible after a higher one, which
-- is why Pending never keeps a per-device cursor (see messages.go).
CREATE SEQUENCE message_seq AS bigint;

-- Identifiers use the "C" collation: byte order, as Go sorts strings, so
-- that "in ID order" means the same on every database; it is also the
-- cheapest to compare.
CREATE TABLE apps (
    key         text COLLATE "C" PRIMARY KEY,
    name        text NOT NULL UNIQUE,
    secret_hash bytea,
    created_at  timestamptz NOT NULL
);

-- devices.app has no foreign key: apps are never deleted, CreateDevice checks
-- that the app exists, and a key lock on the app row at every registration
-- would make one hot row of every app's registration storm.
CREATE TABLE devices (
    id          text COLLATE "C" PRIMARY KEY,
    app         text COLLATE "C" NOT NULL,
    platform    text NOT NULL,
    alias       text COLLATE "C" NOT NULL DEFAULT '',
    tags        text[],
    secret_hash bytea,
    channel     jsonb NOT NULL,
    created_at  timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL,
    first_seq   bigint NOT NULL
);
CREATE INDEX devices_app ON devices (app, id);
CREATE INDEX devices_alias ON devices (app, alias) WHERE alias <> '';
CREATE INDEX devices_tags ON devices USING gin (tags);

-- messages holds each message once. The audience and the payload are plain
-- columns rather than JSON so that they round-trip exactly (a broadcast that
-- also names devices, nil versus empty lists, extras bytes as given) and so
-- that Pending can match tags and platforms in SQL.
CREATE TABLE messages (
    seq              bigint PRIMARY KEY DEFAULT nextval('message_seq'),
    app              text COLLATE "C" NOT NULL,
    id               text COLLATE "C" NOT NULL,
    fanout           boolean NOT NULL,  -- push.Message.Fanout: the audience has a selector
    aud_all          boolean NOT NULL,
    aud_ids          text[],
    aud_aliases      text[],
    aud_tags         text[],
    aud_tag_and      text[],
    aud_tag_not      text[],
    platforms        text[],            -- NULL or empty: every platform
    has_notification boolean NOT NULL,
    n_title          text,
    n_body           text,
    n_badge          integer,
    n_sound          text,
    n_extras         bytea,
    data             bytea,
    ttl              interval NOT NULL,
    priority         text NOT NULL,
    collapse_id      text,              -- NULL when the message has none
    idempotency_key  text,              -- NULL when the message has none
    accepted_at      timestamptz NOT NULL,
    send_at          timestamptz NOT NULL,
    expires_at       timestamptz NOT NULL,
    recalled         boolean NOT NULL DEFAULT false,
    replaced         boolean NOT NULL DEFAULT false,
    -- swept is set by Sweep once the message is dead and its inbox entries
    -- and acknowledgements are gone; later acknowledgements are ignored.
    swept            boolean NOT NULL DEFAULT false,
    -- Counters (store.Counters). delivered holds only acknowledgements
    -- already folded in by Sweep; Message adds the rows still in acks.
    targeted         integer NOT NULL DEFAULT 0,
    delivered        integer NOT NULL DEFAULT 0,
    n_replaced       integer NOT NULL DEFAULT 0,
    UNIQUE (app, id)
);
-- Idempotency: Append inserts with ON CONFLICT DO NOTHING on this index, so
-- two nodes appending the same key at once store one message.
CREATE UNIQUE INDEX messages_idempotency ON messages (app, idempotency_key) WHERE idempotency_key IS NOT NULL;
CREATE INDEX messages_collapse ON messages (app, collapse_id) WHERE collapse_id IS NOT NULL;
-- The fan-out messages a device may still receive: Pending scans this.
CREATE INDEX messages_fanout ON messages (app, seq) WHERE fanout AND NOT recalled AND NOT replaced AND NOT swept;
-- Sweep: messages that have just died (expired, or withdrawn: recalled or
-- replaced), and swept messages to purge. The two expiry indexes split the
-- table, so neither scan wades through the other's rows.
CREATE INDEX messages_unswept ON messages (expires_at) WHERE NOT swept;
CREATE INDEX messages_withdrawn ON messages (seq) WHERE NOT swept AND (recalled OR replaced);
CREATE INDEX messages_swept ON messages (expires_at) WHERE swept;

-- inbox: one entry per explicit target. acks: one row per (device, message)
-- acknowledged, explicit or fan-out; its primary key is what makes a
-- delivery count once. Acknowledging never updates the message row:
-- thousands of devices acknowledging one broadcast would otherwise queue on
-- that row's lock, one commit after another.
--
-- Neither table has foreign keys. Their triggers cost as much as the insert
-- itself, and they would guard nothing: Append and Ack key-share lock the
-- device row before writing, and DeleteDevice locks it for update before
-- deleting the device's rows, so no entry or ack outlives its device; Sweep
-- deletes a message's rows before or with the message.
CREATE TABLE inbox (
    device_id text COLLATE "C" NOT NULL,
    seq       bigint NOT NULL,
    PRIMARY KEY (device_id, seq)
);
CREATE INDEX inbox_seq ON inbox (seq);

-- acks.fanout copies messages.fanout so that Pending can read a device's
-- fan-out acks from the primary key alone (an index-only scan), however many
-- acks of explicit messages the device also has.
CREATE TABLE acks (
    device_id text COLLATE "C" NOT NULL,
    seq       bigint NOT NULL,
    fanout    boolean NOT NULL,
    PRIMARY KEY (device_id, seq) INCLUDE (fanout)
);
CREATE INDEX acks_seq ON acks (seq);
