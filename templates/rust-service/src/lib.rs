//! {{name}} as a library: the shared state, the router and the serve loop. `main.rs` only
//! reads the configuration and waits for signals, so tests can run the service in process.

pub mod api;
pub mod config;
pub mod docs;
pub mod log;
pub mod metrics;

use std::future::Future;
use std::ops::Deref;
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::get;
use serde_json::json;
use tokio::net::TcpListener;

use crate::config::Config;
use crate::log::{Level, Logger};
use crate::metrics::Metrics;

/// What every handler shares; cloning it is one reference count.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

pub struct Shared {
    pub version: String,
    pub metrics: Metrics,
    pub logger: Logger,
    /// Made once at startup, from the code: the docs cannot drift from it.
    openapi_json: String,
    docs_html: String,
}

impl Deref for AppState {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.0
    }
}

impl AppState {
    pub fn new(config: &Config, logger: Logger) -> AppState {
        let doc = docs::openapi(&config.version);
        AppState(Arc::new(Shared {
            version: config.version.clone(),
            metrics: Metrics::default(),
            logger,
            openapi_json: serde_json::to_string_pretty(&doc).unwrap_or_default(),
            docs_html: docs::render_html(&doc),
        }))
    }
}

/// The whole service as a router.
pub fn app(state: AppState) -> Router {
    Router::new()
        .route("/", get(api::hello).post(api::filter))
        .route("/health", get(api::health))
        .route("/metrics", get(api::metrics))
        .route("/openapi.json", get(docs::openapi_json))
        .route("/docs", get(docs::docs_page))
        .method_not_allowed_fallback(api::method_not_allowed)
        .fallback(api::not_found)
        // `layer`, so that 404s and 405s are counted and logged too.
        .layer(middleware::from_fn_with_state(state.clone(), track))
        .with_state(state)
}

/// Counts and logs every request.
async fn track(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", MatchedPath::as_str)
        .to_string();
    let method = request.method().to_string();
    let path = request.uri().path().to_string();
    let response = next.run(request).await;
    let status = response.status().as_u16();
    state.metrics.record(&route, &method, status);
    let millis = started.elapsed().as_micros() as f64 / 1000.0;
    // The platform polls /health every few seconds: those lines only at debug.
    let level = if route == "/health" {
        Level::Debug
    } else {
        Level::Info
    };
    state.logger.log(
        level,
        "request",
        json!({"method": method, "path": path, "status": status, "duration_ms": millis}),
    );
    response
}

/// Serves until `shutdown` completes, then stops accepting connections and lets the requests
/// in flight finish (the platform sends SIGTERM, and SIGKILL some seconds later).
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let logger = state.logger.clone();
    logger.log(
        Level::Info,
        "listening",
        json!({"addr": listener.local_addr()?.to_string(), "version": state.version}),
    );
    axum::serve(listener, app(state))
        .with_graceful_shutdown(shutdown)
        .await?;
    logger.log(Level::Info, "stopped", json!({}));
    Ok(())
}

#[cfg(test)]
mod tests;
