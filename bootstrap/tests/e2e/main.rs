//! End-to-end tests: each starts the real `banter` binary on port 0 with its own database and
//! speaks to it with a real WebSocket client (tokio-tungstenite) and HTTP client (reqwest).

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

mod cache;
mod campaign;
mod cli;
mod cluster;
mod compression;
mod drain;
mod edits;
mod handshake;
mod helpers;
mod nginx;
mod private;
mod proxies;
mod reads;
mod replica;
mod rest;
mod search;
mod websocket;
