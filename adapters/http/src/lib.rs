//! # banter-adapter-http
//!
//! banter's HTTP edge on poem: the WebSocket transport (`/ws/chat/{room}/`), the OpenAPI REST
//! API (`/api/…`, `/healthz`, `/readyz`, with the document at `/openapi.json` and Swagger UI
//! at `/docs`), `/metrics`, and the embedded web app (`/`, `/client1/`, `/client2/`).
//! Application errors become the contract's codes and statuses in one place ([`problem`]).
//!
//! Generic over the wiring ([`Ports`]): it never names a concrete store or broker.
//!
//! May depend on: `banter-application`, `banter-domain`, poem, poem-openapi, tokio,
//! jsonwebtoken, governor, ipnet (trusted proxies' CIDR blocks), the metrics crates, serde and
//! tracing.

mod auth;
mod client_address;
mod compression;
mod guard;
mod listener;
mod params;
mod problem;
mod prometheus;
mod rest;
mod web;
mod wire;
mod ws;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use banter_application::{ChatOf, Ports, RateLimit};
use metrics_exporter_prometheus::PrometheusHandle;
use poem::error::{MethodNotAllowedError, NotFoundError};
use poem::{Endpoint, EndpointExt, IntoEndpoint, Route, get};
use tokio::sync::watch;

pub use auth::AuthMode;
pub use client_address::{TrustedProxies, TrustedProxiesError};
use guard::{AddressLimiter, ConnectionSlots};
pub use guard::{AllowedOrigin, OriginParseError};
pub use listener::NoDelayAcceptor;
use problem::{ErrorCode, Problem};
pub use prometheus::install_metrics;
use ws::FrameCaches;

/// WebSocket timing and bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WsSettings {
    /// How often the server pings an otherwise quiet connection.
    pub ping_interval: Duration,
    /// A client that sends nothing (not even a pong) for this long is disconnected.
    pub idle_timeout: Duration,
    /// A write that cannot complete for this long drops the connection.
    pub write_timeout: Duration,
    /// Largest message (all fragments together) a client may send.
    pub max_message_bytes: usize,
}

impl Default for WsSettings {
    fn default() -> Self {
        Self {
            ping_interval: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(90),
            write_timeout: Duration::from_secs(30),
            max_message_bytes: 64 * 1024,
        }
    }
}

/// Everything the HTTP edge is configured with.
#[derive(Debug, Clone)]
pub struct HttpSettings {
    pub auth: AuthMode,
    pub allowed_origins: Vec<AllowedOrigin>,
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
    /// Per client address, for REST posts; `None` turns it off.
    pub rest_rate_limit: Option<RateLimit>,
    pub ws: WsSettings,
    /// Largest REST request body.
    pub max_body_bytes: usize,
    /// permessage-deflate for WebSocket clients that offer it, gzip/br for HTTP responses.
    pub compression: bool,
    /// Peers whose `X-Forwarded-For` / `Forwarded` headers name the client's address.
    pub trusted_proxies: TrustedProxies,
}

impl Default for HttpSettings {
    fn default() -> Self {
        Self {
            auth: AuthMode::None,
            allowed_origins: Vec::new(),
            max_connections: 10_000,
            max_connections_per_ip: 100,
            rest_rate_limit: Some(RateLimit::DEFAULT),
            ws: WsSettings::default(),
            max_body_bytes: 64 * 1024,
            compression: true,
            trusted_proxies: TrustedProxies::default(),
        }
    }
}

/// What every handler shares.
pub struct AppState<P: Ports> {
    chat: ChatOf<P>,
    settings: HttpSettings,
    slots: Arc<ConnectionSlots>,
    shutdown: watch::Receiver<bool>,
    draining: Arc<AtomicBool>,
    rest_limiter: Option<AddressLimiter>,
    metrics: Option<PrometheusHandle>,
    frames: FrameCaches,
}

impl<P: Ports> std::fmt::Debug for AppState<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("settings", &self.settings)
            .field("open_connections", &self.slots.open())
            .finish_non_exhaustive()
    }
}

impl<P: Ports> AppState<P> {
    /// From the drain on: `/readyz` answers 503 and new WebSockets are refused.
    fn is_shutting_down(&self) -> bool {
        self.draining.load(Ordering::SeqCst) || *self.shutdown.borrow()
    }

    /// Waits until every WebSocket closed, or `limit` passed; returns how many remain.
    pub async fn wait_until_disconnected(&self, limit: Duration) -> usize {
        self.slots.wait_until_empty(limit).await
    }

    /// Periodic housekeeping: forget idle per-address buckets, refresh metric summaries.
    pub fn housekeeping(&self) {
        if let Some(limiter) = &self.rest_limiter {
            limiter.forget_idle();
        }
        if let Some(handle) = &self.metrics {
            handle.run_upkeep();
        }
    }
}

/// Starts and stops the HTTP edge's connections.
#[derive(Debug)]
pub struct Shutdown {
    sender: watch::Sender<bool>,
    draining: Arc<AtomicBool>,
}

impl Shutdown {
    /// The drain: `/readyz` answers 503 and new WebSockets are refused (503), so a load
    /// balancer stops sending clients here; open WebSockets and HTTP requests go on.
    pub fn drain(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    /// The drain, and every open WebSocket is asked to close with 1001.
    pub fn begin(&self) {
        self.drain();
        self.sender.send_replace(true);
    }
}

/// Builds the shared state. `metrics` is the installed Prometheus recorder's handle, if any.
pub fn app_state<P: Ports>(
    chat: ChatOf<P>,
    settings: HttpSettings,
    metrics: Option<PrometheusHandle>,
) -> (Arc<AppState<P>>, Shutdown) {
    let (sender, receiver) = watch::channel(false);
    let draining = Arc::new(AtomicBool::new(false));
    let slots = ConnectionSlots::new(settings.max_connections, settings.max_connections_per_ip);
    let rest_limiter = settings.rest_rate_limit.map(AddressLimiter::new);
    let state = Arc::new(AppState {
        chat,
        settings,
        slots,
        shutdown: receiver,
        draining: Arc::clone(&draining),
        rest_limiter,
        metrics,
        frames: FrameCaches::default(),
    });
    (state, Shutdown { sender, draining })
}

/// The whole HTTP application.
pub fn router<P: Ports>(state: Arc<AppState<P>>) -> impl Endpoint + 'static {
    let (api, docs, spec) = rest::service(Arc::clone(&state));
    let docs = Arc::new(rest::Document::new(docs, "text/html; charset=utf-8"));
    let api = Arc::new(api.into_endpoint());
    let checked_api = rest::with_request_checks(Arc::clone(&state), Arc::clone(&api));
    let ws_endpoint = Arc::new(get(ws::Handshake::<P>::new(Arc::clone(&state))));
    Route::new()
        .at("/ws/chat/:room", Arc::clone(&ws_endpoint))
        .at("/ws/chat/:room/", ws_endpoint)
        .nest_no_strip("/api", checked_api)
        .at("/healthz", Arc::clone(&api))
        .at("/readyz", api)
        .at(
            "/openapi.json",
            get(rest::Document::new(spec, "application/json")),
        )
        .at("/docs", get(Arc::clone(&docs)))
        .at("/docs/", get(docs))
        .at(
            "/metrics",
            get(prometheus::Metrics::<P>::new(Arc::clone(&state))),
        )
        .at("/asyncapi.yaml", get(web::asyncapi))
        .at("/", get(web::index))
        .at("/client1", get(web::client))
        .at("/client1/", get(web::client))
        .at("/client2", get(web::client))
        .at("/client2/", get(web::client))
        .at("/static/:file", get(web::asset))
        .catch_error(|_: NotFoundError| async {
            Problem::new(ErrorCode::NotFound, "no such resource").into_response()
        })
        .catch_error(|_: MethodNotAllowedError| async {
            let mut response = Problem::new(ErrorCode::NotFound, "this method is not allowed here")
                .into_response();
            response.set_status(poem::http::StatusCode::METHOD_NOT_ALLOWED);
            response
        })
        .data(web::WebOptions {
            compression: state.settings.compression,
        })
        .with(compression::CompressResponses {
            enabled: state.settings.compression,
        })
        .with(client_address::RequestLog {
            trusted: state.settings.trusted_proxies.clone(),
        })
}
