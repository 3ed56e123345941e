-- Private rooms. A room created private gets its row at creation (last_seq 0), with its
-- creator; public rooms keep getting theirs at their first message, as before.
ALTER TABLE rooms ADD COLUMN private BOOLEAN NOT NULL DEFAULT FALSE;
ALTER TABLE rooms ADD COLUMN creator TEXT;

-- The members of private rooms; by user too, for the rooms a user may see.
CREATE TABLE room_members (
    room TEXT NOT NULL REFERENCES rooms (name),
    username TEXT NOT NULL,
    PRIMARY KEY (room, username)
) WITHOUT ROWID;
CREATE INDEX room_members_by_user ON room_members (username, room);
