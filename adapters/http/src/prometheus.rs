//! Metrics: the Prometheus recorder, the series the contract names (exported from the start),
//! and `GET /metrics`.

use std::sync::Arc;

use banter_application::Ports;
use metrics_exporter_prometheus::PrometheusHandle;
use poem::http::StatusCode;
use poem::{Endpoint, Request, Response};

use crate::AppState;
use crate::problem::ErrorCode;

/// Installs the Prometheus recorder (once per process) and returns its handle.
///
/// # Errors
/// When another recorder is already installed.
pub fn install_metrics() -> Result<PrometheusHandle, metrics_exporter_prometheus::BuildError> {
    use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
    const LATENCY: &[f64] = &[
        0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    ];
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".to_owned()), LATENCY)?
        .set_buckets_for_metric(
            Matcher::Full("banter_store_batch_size".to_owned()),
            &[1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0],
        )?
        .install_recorder()?;
    describe_metrics();
    Ok(handle)
}

/// Describes the metrics and exports every counter and gauge from the start (at zero), so a
/// scraper sees them before the first event.
fn describe_metrics() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_gauge!("banter_connections", "Open WebSocket connections.");
    describe_gauge!(
        "banter_runtime_alive_tasks",
        "Tasks alive in the async runtime (read at each scrape)."
    );
    describe_counter!(
        "banter_connections_refused_total",
        "Refused WebSocket handshakes, by problem code (label reason)."
    );
    describe_counter!(
        "banter_messages_stored_total",
        "Messages committed to storage."
    );
    describe_counter!(
        "banter_frames_sent_total",
        "WebSocket frames written to clients."
    );
    describe_counter!(
        "banter_ws_bytes_sent_total",
        Unit::Bytes,
        "WebSocket bytes queued to clients, frame headers included, after compression."
    );
    describe_counter!(
        "banter_ws_deflate_connections_total",
        "WebSocket connections that negotiated permessage-deflate."
    );
    describe_counter!(
        "banter_errors_total",
        "WebSocket error frames sent, by error code (label code)."
    );
    describe_counter!(
        "banter_http_problems_total",
        "HTTP problem responses, by error code (label code)."
    );
    describe_counter!(
        "banter_history_cache_hits_total",
        "Welcomes, resumes and latest history pages answered from the history cache."
    );
    describe_counter!(
        "banter_history_cache_misses_total",
        "Welcomes, resumes and latest history pages that read the database."
    );
    describe_gauge!(
        "banter_history_cache_rooms",
        "Rooms whose latest messages this node keeps in memory."
    );
    describe_histogram!(
        "banter_store_seconds",
        Unit::Seconds,
        "Time from handing a post to the store until it is committed."
    );
    describe_histogram!(
        "banter_store_commit_seconds",
        Unit::Seconds,
        "Time to commit one batch."
    );
    describe_histogram!("banter_store_batch_size", "Posts per committed batch.");
    describe_histogram!(
        "banter_broadcast_seconds",
        Unit::Seconds,
        "Time to publish one event to a room."
    );
    // Histograms appear once registered: register them now, empty.
    for histogram in [
        "banter_store_seconds",
        "banter_store_commit_seconds",
        "banter_store_batch_size",
        "banter_broadcast_seconds",
    ] {
        drop(metrics::histogram!(histogram));
    }
    metrics::gauge!("banter_connections").set(0.0);
    metrics::counter!("banter_messages_stored_total").absolute(0);
    metrics::counter!("banter_frames_sent_total").absolute(0);
    metrics::counter!("banter_history_cache_hits_total").absolute(0);
    metrics::counter!("banter_history_cache_misses_total").absolute(0);
    metrics::gauge!("banter_history_cache_rooms").set(0.0);
    for code in [
        ErrorCode::InvalidJson,
        ErrorCode::UnknownType,
        ErrorCode::InvalidMessage,
        ErrorCode::RateLimited,
        ErrorCode::Unavailable,
    ] {
        metrics::counter!("banter_errors_total", "code" => code.as_str()).absolute(0);
    }
    for code in [
        ErrorCode::InvalidRoom,
        ErrorCode::InvalidUsername,
        ErrorCode::InvalidParameter,
        ErrorCode::Unauthorized,
        ErrorCode::ForbiddenOrigin,
        ErrorCode::TooManyConnections,
        ErrorCode::OverCapacity,
        ErrorCode::Unavailable,
    ] {
        metrics::counter!("banter_connections_refused_total", "reason" => code.as_str())
            .absolute(0);
    }
}

/// `GET /metrics`: Prometheus text format.
#[derive(Debug)]
pub struct Metrics<P: Ports> {
    state: Arc<AppState<P>>,
}

impl<P: Ports> Metrics<P> {
    pub fn new(state: Arc<AppState<P>>) -> Self {
        Self { state }
    }
}

impl<P: Ports> Endpoint for Metrics<P> {
    type Output = Response;

    async fn call(&self, _req: Request) -> poem::Result<Response> {
        // The core counts cache reads itself (it names no metrics crate); copied in here.
        let cache = self.state.chat.history_cache_stats();
        metrics::counter!("banter_history_cache_hits_total").absolute(cache.hits);
        metrics::counter!("banter_history_cache_misses_total").absolute(cache.misses);
        metrics::gauge!("banter_history_cache_rooms").set(cache.rooms as f64);
        // Tasks alive in the runtime: back at its idle level once connections close, or a
        // leak (a finished connection whose task stays) shows here first.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            metrics::gauge!("banter_runtime_alive_tasks")
                .set(runtime.metrics().num_alive_tasks() as f64);
        }
        let body = self
            .state
            .metrics
            .as_ref()
            .map(|h| h.render())
            .unwrap_or_default();
        Ok(Response::builder()
            .status(StatusCode::OK)
            .content_type("text/plain; version=0.0.4")
            .body(body))
    }
}
