-- Search, indexed off the posting path: a background indexer in each process indexes every
-- room's messages in seq order, in batches, and records how far in `search_progress` (a row
-- lock per room keeps indexers of several processes, and edits, from crossing). A search reads
-- the index up to there and scans the room's short tail after it directly, so it finds
-- everything committed, and a post's transaction never touches the index.
CREATE TABLE search_progress (
    room TEXT COLLATE "C" PRIMARY KEY REFERENCES rooms (name),
    indexed_seq BIGINT NOT NULL
);

-- The words of each message as a tsvector built by banter itself (lowercased by the
-- contract's rules, with positions for phrases; no stemming, no stop words), so matching does
-- not depend on the server's locale or text search configuration.
CREATE TABLE search_docs (
    room TEXT COLLATE "C" NOT NULL,
    seq BIGINT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    words TSVECTOR NOT NULL,
    PRIMARY KEY (room, seq)
);
-- Rare words: the GIN index. Common words: the primary key (a room, newest first) or the
-- timestamp (every room, newest first) walked down until enough rows match.
CREATE INDEX search_docs_words ON search_docs USING GIN (words);
CREATE INDEX search_docs_newest ON search_docs (created_at_ms);
