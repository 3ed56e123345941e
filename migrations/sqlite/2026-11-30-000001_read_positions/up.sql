-- Read positions: how far each user has read each room. A position only moves forward
-- (an upsert that updates only to a higher read_seq) and never past the room's last_seq.
-- Keyed by user first: a user's rooms listing is one range of the primary key.
CREATE TABLE read_positions (
    username TEXT NOT NULL,
    room TEXT NOT NULL REFERENCES rooms (name),
    read_seq BIGINT NOT NULL,
    PRIMARY KEY (username, room)
) WITHOUT ROWID;

-- The rooms a user posted in, for their rooms listing: one range of this index per user.
CREATE INDEX messages_author ON messages (username, room);
