DROP TABLE revisions;
DROP INDEX messages_rev;
ALTER TABLE messages DROP COLUMN rev;
ALTER TABLE messages DROP COLUMN deleted;
ALTER TABLE messages DROP COLUMN edited_at_ms;
ALTER TABLE rooms DROP COLUMN last_rev;
