-- Rooms that have messages. `last_seq` is the room's newest seq: a batch of n posts bumps it by
-- n inside the committing transaction (holding the row lock), so seqs are gapless and in
-- commit order even when several banter processes write the same room.
-- COLLATE "C" sorts names in code-point order, as the contract's listings require.
CREATE TABLE rooms (
    name TEXT COLLATE "C" PRIMARY KEY,
    last_seq BIGINT NOT NULL DEFAULT 0,
    last_message_at_ms BIGINT,
    created_at_ms BIGINT NOT NULL
);

-- Messages keyed by (room, seq): every history read is one index range scan.
-- Times are Unix milliseconds (UTC).
CREATE TABLE messages (
    room TEXT COLLATE "C" NOT NULL REFERENCES rooms (name),
    seq BIGINT NOT NULL,
    username TEXT NOT NULL,
    content TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    client_id TEXT,
    PRIMARY KEY (room, seq)
);

-- Idempotent resend: one message per (room, username, client_id) when a client id is given.
CREATE UNIQUE INDEX messages_client_id ON messages (room, username, client_id)
    WHERE client_id IS NOT NULL;
