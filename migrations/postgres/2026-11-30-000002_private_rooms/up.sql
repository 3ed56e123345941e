-- Private rooms. A room created private gets its row at creation (last_seq 0), with its
-- creator; public rooms keep getting theirs at their first message, as before.
ALTER TABLE rooms
    ADD COLUMN private BOOLEAN NOT NULL DEFAULT FALSE,
    ADD COLUMN creator TEXT COLLATE "C";

-- The members of private rooms; by user too, for the rooms a user may see.
CREATE TABLE room_members (
    room TEXT COLLATE "C" NOT NULL REFERENCES rooms (name),
    username TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (room, username)
);
CREATE INDEX room_members_by_user ON room_members (username, room);
