-- Search, indexed off the posting path: a background indexer in each process indexes every
-- room's messages in seq order, in batches, and records how far in `search_progress`. A search
-- reads the index up to there and scans the room's short tail after it directly, so it finds
-- everything committed, and a post's transaction never touches the index.
CREATE TABLE search_progress (
    room TEXT PRIMARY KEY NOT NULL REFERENCES rooms (name),
    indexed_seq BIGINT NOT NULL
) WITHOUT ROWID;

-- One row per indexed message, its id being the index's rowid (AUTOINCREMENT: an id is never
-- given twice, even after a delete). Ids are given in commit order
-- (SQLite has one writer, and the indexer takes messages oldest first), so the newest
-- results come first by walking the index down from the highest rowid, in a room too.
CREATE TABLE search_docs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    room TEXT NOT NULL,
    seq BIGINT NOT NULL
);
CREATE UNIQUE INDEX search_docs_message ON search_docs (room, seq);

-- The words of each message, lowercased and separated by spaces by banter itself (the
-- contract's rules: runs of Unicode letters and digits), so the `ascii` tokenizer only splits
-- on the spaces. `room` holds the room's name in hex, a single token to narrow a search to it.
CREATE VIRTUAL TABLE search_index USING fts5(room, words, tokenize = 'ascii');
