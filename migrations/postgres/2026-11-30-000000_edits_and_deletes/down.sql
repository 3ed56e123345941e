DROP TABLE revisions;
DROP INDEX messages_rev;
ALTER TABLE messages DROP COLUMN rev, DROP COLUMN deleted, DROP COLUMN edited_at_ms;
ALTER TABLE rooms DROP COLUMN last_rev;
