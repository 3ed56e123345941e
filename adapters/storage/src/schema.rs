//! The tables, as diesel sees them; identical on SQLite and Postgres.

diesel::table! {
    rooms (name) {
        name -> Text,
        last_seq -> BigInt,
        last_message_at_ms -> Nullable<BigInt>,
        created_at_ms -> BigInt,
        last_rev -> BigInt,
        private -> Bool,
        creator -> Nullable<Text>,
    }
}

diesel::table! {
    messages (room, seq) {
        room -> Text,
        seq -> BigInt,
        username -> Text,
        content -> Text,
        created_at_ms -> BigInt,
        client_id -> Nullable<Text>,
        edited_at_ms -> Nullable<BigInt>,
        deleted -> Bool,
        rev -> Nullable<BigInt>,
    }
}

diesel::table! {
    revisions (room, rev) {
        room -> Text,
        rev -> BigInt,
        seq -> BigInt,
    }
}

diesel::joinable!(messages -> rooms (room));
diesel::allow_tables_to_appear_in_same_query!(
    rooms,
    messages,
    revisions,
    read_positions,
    room_members,
    search_progress
);

diesel::table! {
    read_positions (username, room) {
        username -> Text,
        room -> Text,
        read_seq -> BigInt,
    }
}

diesel::table! {
    room_members (room, username) {
        room -> Text,
        username -> Text,
    }
}

// The search index's bookkeeping; the index tables themselves differ by backend and are
// queried in SQL (`crate::search`).
diesel::table! {
    search_progress (room) {
        room -> Text,
        indexed_seq -> BigInt,
    }
}
