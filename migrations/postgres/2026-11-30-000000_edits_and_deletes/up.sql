-- Edits and deletes. `last_rev` is the room's newest change: an edit or a delete bumps it by one
-- inside its transaction, holding the room's row lock (as a batch of posts does for
-- `last_seq`), so revs are gapless and in commit order across processes.
ALTER TABLE rooms ADD COLUMN last_rev BIGINT NOT NULL DEFAULT 0;

-- A message's current state: when it was last edited, whether it was deleted (its content is
-- then '' and forgotten; its client_id stays, for the idempotency rule), and the rev of its
-- latest change (NULL if never changed).
ALTER TABLE messages
    ADD COLUMN edited_at_ms BIGINT,
    ADD COLUMN deleted BOOLEAN NOT NULL DEFAULT FALSE,
    ADD COLUMN rev BIGINT;

-- The changes listing: messages of a room by their latest rev.
CREATE INDEX messages_rev ON messages (room, rev);

-- Every rev of a room and the message it changed, so a gap in a live stream of changes is
-- filled rev by rev.
CREATE TABLE revisions (
    room TEXT COLLATE "C" NOT NULL REFERENCES rooms (name),
    rev BIGINT NOT NULL,
    seq BIGINT NOT NULL,
    PRIMARY KEY (room, rev)
);
