//! The filter service as a library: shared state, the router, the request-tracking middleware and the serve loop with graceful shutdown.
//!
//! `main.rs` only reads the configuration and the signals; everything a test
//! needs to run the service in process (`app`) or on a socket (`serve`) is here.

pub mod config;
pub mod docs;
pub mod error;
pub mod filter;
pub mod handlers;
pub mod log;
pub mod metrics;

use std::future::{Future, IntoFuture};
use std::ops::Deref;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{MatchedPath, Request, State};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, MethodRouter};
use axum::serve::ListenerExt;
use axum::Router;
use tokio::net::TcpListener;

use crate::config::Config;
use crate::log::{Level, Logger, Value};
use crate::metrics::Metrics;

/// What every handler shares. Cloning is one reference count.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

pub struct Shared {
    /// Reported by `/health` and the docs.
    pub version: String,
    pub max_body_bytes: usize,
    pub metrics: Metrics,
    pub logger: Logger,
    /// Made once at startup: the document cannot change while running.
    openapi_json: Bytes,
    docs_html: Bytes,
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
            max_body_bytes: config.max_body_bytes,
            metrics: Metrics::new(routes().into_iter().map(|(path, _)| path)),
            logger,
            openapi_json: docs::to_json(&doc),
            docs_html: docs::render_html(&doc),
        }))
    }
}

/// Every route the service serves. The router and the metrics' route labels
/// are both built from this list, and a unit test checks each entry (and
/// each method its router answers, read back from the `Allow` header) is in
/// the OpenAPI document.
pub fn routes() -> Vec<(&'static str, MethodRouter<AppState>)> {
    vec![
        ("/", get(handlers::hello).post(filter::filter)),
        ("/health", get(handlers::health)),
        ("/metrics", get(handlers::metrics)),
        ("/openapi.json", get(docs::openapi_json)),
        ("/docs", get(docs::docs_page)),
    ]
}

/// The whole service as a router, for `serve` and for in-process tests.
pub fn app(state: AppState) -> Router {
    let mut router = Router::new();
    for (path, method_router) in routes() {
        router = router.route(path, method_router);
    }
    router
        // Must come after the routes: it is set on each route's method router.
        .method_not_allowed_fallback(handlers::method_not_allowed)
        .fallback(handlers::not_found)
        // `layer` (not `route_layer`) so 404s and 405s are counted and logged too;
        // it runs after routing, so MatchedPath is known.
        .layer(middleware::from_fn_with_state(state.clone(), track))
        .with_state(state)
}

/// Counts, times and logs every request.
async fn track(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let start = Instant::now();
    let _in_flight = state.metrics.start();
    let route = state.metrics.route_index(
        req.extensions()
            .get::<MatchedPath>()
            .map(MatchedPath::as_str),
    );
    let method = req.method().clone();
    // The log wants the raw path, known only before the request is handed
    // on; a Uri clone is a few reference counts, skipped when not logging.
    let uri = state.logger.enabled(Level::Info).then(|| req.uri().clone());

    let response = next.run(req).await;

    let elapsed = start.elapsed();
    let status = response.status().as_u16();
    state.metrics.record(route, &method, status, elapsed);
    if let Some(uri) = uri {
        // The platform checks /health every second or so: a passing check is logged only at
        // debug, so that the log shows the app's traffic; a failing one is logged at info.
        let routine = uri.path() == "/health" && status < 400;
        if !routine || state.logger.enabled(Level::Debug) {
            state
                .logger
                .request(method.as_str(), uri.path(), status, elapsed);
        }
    }
    response
}

/// How `serve` ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Stopped {
    /// Every in-flight request finished within the grace period.
    Drained,
    /// The grace period ran out with requests still in flight; they are cut off.
    GraceExpired,
}

/// Serves `state` on `listener` until `shutdown` completes, then stops
/// accepting connections, lets in-flight requests finish for up to `grace`,
/// and returns. Logs the startup line (address and version) first, whatever
/// the log level.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    grace: Duration,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<Stopped> {
    let addr = listener.local_addr()?;
    let logger = state.logger.clone();
    // Written at every LOG_LEVEL: the platform reads it to see the app started.
    logger.announce(
        Level::Info,
        "listening",
        &[
            ("addr", Value::Str(&addr.to_string())),
            ("version", Value::Str(&state.version)),
        ],
    );

    let (started_tx, started_rx) = tokio::sync::oneshot::channel::<()>();
    let signal_logger = logger.clone();
    let signal = async move {
        shutdown.await;
        signal_logger.event(
            Level::Info,
            "shutting down",
            &[("grace_seconds", Value::Num(grace.as_secs()))],
        );
        let _ = started_tx.send(());
    };
    // Small responses go out in one write, so Nagle's algorithm would only add delay.
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    let server = axum::serve(listener, app(state.clone()))
        .with_graceful_shutdown(signal)
        .into_future();
    let deadline = async move {
        match started_rx.await {
            Ok(()) => tokio::time::sleep(grace).await,
            // The server ended before any signal; let its result win.
            Err(_) => std::future::pending().await,
        }
    };

    tokio::select! {
        result = server => {
            result?;
            logger.event(Level::Info, "stopped", &[]);
            Ok(Stopped::Drained)
        }
        () = deadline => {
            logger.event(
                Level::Warn,
                "grace period over, exiting with requests in flight",
                &[("in_flight", Value::Num(state.metrics.in_flight()))],
            );
            Ok(Stopped::GraceExpired)
        }
    }
}

#[cfg(test)]
mod tests;
