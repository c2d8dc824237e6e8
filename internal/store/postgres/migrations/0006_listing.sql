-- 0006_listing: an app's messages newest first (store.Lister.ListMessages).
--
-- The console and GET /v1/messages list an app's recent messages a page at a
-- time; without this index that is a walk of every app's messages by seq.
-- Each message adds one entry, at the right-hand edge of its app's range.
-- Listing devices needs nothing new: devices_app (app, id) pages through an
-- app's devices and devices_tags finds those with a tag.
CREATE INDEX messages_app_seq ON messages (app, seq);
