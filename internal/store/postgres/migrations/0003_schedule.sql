-- 0003_schedule: scheduled messages not yet fired (store.Store.Due).
--
-- A table of its own rather than a partial index on messages: firing a
-- message deletes its row here, where an update of the message row would
-- write a new version of it, body and all, for every scheduled message.
-- Rows are keyed by seq and found in due order through scheduled_due.
CREATE TABLE scheduled (
    seq     bigint PRIMARY KEY,
    send_at timestamptz NOT NULL
);
CREATE INDEX scheduled_due ON scheduled (send_at, seq);

-- Messages scheduled before this migration and not due yet fire as if they
-- had been accepted after it. Those due already are not listed: they may
-- have been handed to devices, and a device is told of a message once.
INSERT INTO scheduled (seq, send_at)
SELECT seq, send_at FROM messages
WHERE send_at > accepted_at AND send_at > now() AND NOT recalled AND NOT replaced AND NOT swept;
