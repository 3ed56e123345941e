-- Rooms that have messages. `last_seq` is the room's newest seq: a batch of n posts bumps it by
-- n inside the committing transaction, so seqs are gapless and in commit order.
CREATE TABLE rooms (
    name TEXT PRIMARY KEY NOT NULL,
    last_seq BIGINT NOT NULL DEFAULT 0,
    last_message_at_ms BIGINT,
    created_at_ms BIGINT NOT NULL
) WITHOUT ROWID;

-- Messages, clustered by (room, seq): every history read is one range scan of this key.
-- Times are Unix milliseconds (UTC).
CREATE TABLE messages (
    room TEXT NOT NULL REFERENCES rooms (name),
    seq BIGINT NOT NULL,
    username TEXT NOT NULL,
    content TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    client_id TEXT,
    PRIMARY KEY (room, seq)
) WITHOUT ROWID;

-- Idempotent resend: one message per (room, username, client_id) when a client id is given.
CREATE UNIQUE INDEX messages_client_id ON messages (room, username, client_id)
    WHERE client_id IS NOT NULL;
