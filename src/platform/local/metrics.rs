//! The route's metrics: what each version served, counted by the route itself, exported in
//! Prometheus's text format on the environment's admin port and as a [`Snapshot`] on the control
//! socket (`{"op":"stats"}`), for an analysis that compares two versions.
//!
//! Counted per version, since that is what a canary compares: requests by method and status
//! class, their latency (from the request's arrival to the answer's head leaving the route, a
//! histogram), failed attempts at an instance (upstream errors) and the attempts sent again after
//! one (retries); instances healthy is read from the route when asked.
//!
//! The hot path is a few relaxed atomic additions on counters fixed in advance: each instance's
//! slot holds its version's [`VersionStats`], so a request finds its counters without a lookup,
//! a lock or an allocation. The text is made when a scraper asks, from a [`Snapshot`] (a
//! [`Collector`] of prometheus-client), so that the stats request and the scrape say the same.

use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;

use super::proxy::Proxy;

/// The methods counted by name; any other is `other`, so that a client cannot grow the series.
const METHODS: [&str; 8] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "other",
];
const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];
/// The latency buckets' upper bounds, in seconds; a last one, +Inf, takes the rest. Fine
/// enough for a canary's p99 (read from them, see `local/canary.rs`): from 5 ms to 2.5 s each
/// bound is at most 1.7 times the one before, so a quantile read in a bucket is off by less
/// than that bucket's width, which stays under the default threshold of a p99's rise (500 ms)
/// below 1 s.
pub const LATENCY_BOUNDS: [f64; 21] = [
    0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.035, 0.05, 0.075, 0.1, 0.15, 0.25, 0.35,
    0.5, 0.75, 1.0, 1.5, 2.5, 5.0, 10.0,
];
const BUCKETS: usize = LATENCY_BOUNDS.len() + 1;
/// Versions whose counts a server keeps: the serving one and those before it, for a scraper
/// that has not yet read their last counts. A long-lived server deployed many times does not
/// grow without end.
const KEPT_VERSIONS: usize = 8;

/// The counters of one version, shared by its instances' slots.
#[derive(Debug)]
pub struct VersionStats {
    pub version: String,
    requests: [[AtomicU64; CLASSES.len()]; METHODS.len()],
    upstream_errors: AtomicU64,
    retries: AtomicU64,
    /// Per bucket (not cumulative), the last one for above every bound.
    latency: [AtomicU64; BUCKETS],
    latency_sum_micros: AtomicU64,
}

impl VersionStats {
    pub fn new(version: &str) -> VersionStats {
        VersionStats {
            version: version.to_string(),
            requests: std::array::from_fn(|_| std::array::from_fn(|_| AtomicU64::new(0))),
            upstream_errors: AtomicU64::new(0),
            retries: AtomicU64::new(0),
            latency: std::array::from_fn(|_| AtomicU64::new(0)),
            latency_sum_micros: AtomicU64::new(0),
        }
    }

    /// A request answered with `status`, `elapsed` after it arrived.
    pub fn answered(&self, method: &Method, status: StatusCode, elapsed: Duration) {
        let method = match *method {
            Method::GET => 0,
            Method::HEAD => 1,
            Method::POST => 2,
            Method::PUT => 3,
            Method::DELETE => 4,
            Method::PATCH => 5,
            Method::OPTIONS => 6,
            _ => 7,
        };
        let class = usize::from(status.as_u16() / 100).clamp(1, 5) - 1;
        self.requests[method][class].fetch_add(1, Ordering::Relaxed);
        let seconds = elapsed.as_secs_f64();
        let bucket = LATENCY_BOUNDS
            .iter()
            .position(|bound| seconds <= *bound)
            .unwrap_or(BUCKETS - 1);
        self.latency[bucket].fetch_add(1, Ordering::Relaxed);
        let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        self.latency_sum_micros.fetch_add(micros, Ordering::Relaxed);
    }

    /// An attempt at one of this version's instances failed (refused, broken off).
    pub fn upstream_error(&self) {
        self.upstream_errors.fetch_add(1, Ordering::Relaxed);
    }

    /// A request that failed at one of this version's instances is sent again.
    pub fn retry(&self) {
        self.retries.fetch_add(1, Ordering::Relaxed);
    }

    fn snapshot(&self, healthy_instances: u32) -> VersionSnapshot {
        let mut requests = Vec::new();
        for (m, method) in METHODS.iter().enumerate() {
            for (c, class) in CLASSES.iter().enumerate() {
                let count = self.requests[m][c].load(Ordering::Relaxed);
                if count > 0 {
                    requests.push(RequestCount {
                        method: (*method).into(),
                        status: (*class).into(),
                        count,
                    });
                }
            }
        }
        let buckets: Vec<u64> = self
            .latency
            .iter()
            .map(|n| n.load(Ordering::Relaxed))
            .collect();
        VersionSnapshot {
            version: self.version.clone(),
            healthy_instances,
            requests,
            upstream_errors: self.upstream_errors.load(Ordering::Relaxed),
            retries: self.retries.load(Ordering::Relaxed),
            latency: Latency {
                bounds: LATENCY_BOUNDS.to_vec(),
                count: buckets.iter().sum(),
                buckets,
                sum_seconds: self.latency_sum_micros.load(Ordering::Relaxed) as f64 / 1e6,
            },
        }
    }
}

/// The versions an environment's route has counted, newest last.
#[derive(Debug, Default)]
pub struct Metrics {
    versions: Mutex<Vec<Arc<VersionStats>>>,
}

impl Metrics {
    /// The counters of `version`, made on its first deploy and kept through later ones (a
    /// rollback to it counts on).
    pub fn version(&self, version: &str) -> Arc<VersionStats> {
        let mut versions = self.versions.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(at) = versions.iter().position(|v| v.version == version) {
            let stats = versions.remove(at);
            versions.push(Arc::clone(&stats));
            return stats;
        }
        let stats = Arc::new(VersionStats::new(version));
        versions.push(Arc::clone(&stats));
        let extra = versions.len().saturating_sub(KEPT_VERSIONS);
        versions.drain(..extra);
        stats
    }

    /// Every kept version's counts, with `healthy` telling each one's healthy instances.
    pub fn snapshot(&self, healthy: impl Fn(&VersionStats) -> u32) -> Snapshot {
        let versions = self.versions.lock().unwrap_or_else(|e| e.into_inner());
        Snapshot {
            versions: versions.iter().map(|v| v.snapshot(healthy(v))).collect(),
        }
    }
}

/// What the route counted, per version: the answer to `{"op":"stats"}`, and what a scrape shows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    pub versions: Vec<VersionSnapshot>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VersionSnapshot {
    pub version: String,
    /// Its instances in the route now that pass their health check.
    pub healthy_instances: u32,
    /// Requests answered, by method and status class (`2xx`..`5xx`); only counts above 0. A
    /// request the route answers itself (502, 503) counts for the version it tried last, or
    /// the one the route points at.
    pub requests: Vec<RequestCount>,
    /// Attempts at an instance that failed: refused, or broken off before an answer.
    pub upstream_errors: u64,
    /// Of those, the ones after which the request was sent again (to another instance if any).
    pub retries: u64,
    pub latency: Latency,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestCount {
    pub method: String,
    pub status: String,
    pub count: u64,
}

/// A latency histogram: `buckets[i]` requests took at most `bounds[i]` seconds and more than
/// the bound before (not cumulative); the last bucket, one longer than `bounds`, took more.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    pub bounds: Vec<f64>,
    pub buckets: Vec<u64>,
    pub count: u64,
    pub sum_seconds: f64,
}

impl Collector for Snapshot {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mut requests = encoder.encode_descriptor(
            "requests",
            "Requests answered by the route, by the version that answered, method and status class",
            None,
            MetricType::Counter,
        )?;
        for version in &self.versions {
            for count in &version.requests {
                let labels = [
                    ("version", version.version.as_str()),
                    ("method", count.method.as_str()),
                    ("status", count.status.as_str()),
                ];
                requests
                    .encode_family(&labels)?
                    .encode_counter::<NoLabelSet, _, u64>(&count.count, None)?;
            }
        }
        let mut latency = encoder.encode_descriptor(
            "request_duration_seconds",
            "Time from a request's arrival at the route to its answer's head leaving it",
            None,
            MetricType::Histogram,
        )?;
        for version in &self.versions {
            let labels = [("version", version.version.as_str())];
            let bounds = version
                .latency
                .bounds
                .iter()
                .copied()
                .chain([f64::INFINITY]);
            let buckets: Vec<(f64, u64)> = bounds
                .zip(version.latency.buckets.iter().copied())
                .collect();
            latency
                .encode_family(&labels)?
                .encode_histogram::<NoLabelSet>(
                    version.latency.sum_seconds,
                    version.latency.count,
                    &buckets,
                    None,
                )?;
        }
        type Read = fn(&VersionSnapshot) -> u64;
        let per_version: [(&str, &str, MetricType, Read); 3] = [
            (
                "upstream_errors",
                "Attempts at an instance that failed (refused, or broken off before an answer)",
                MetricType::Counter,
                |v| v.upstream_errors,
            ),
            (
                "retries",
                "Requests sent again after an attempt at an instance failed",
                MetricType::Counter,
                |v| v.retries,
            ),
            (
                "instances_healthy",
                "Instances in the route that pass their health check",
                MetricType::Gauge,
                |v| u64::from(v.healthy_instances),
            ),
        ];
        for (name, help, kind, read) in per_version {
            let mut metric = encoder.encode_descriptor(name, help, None, kind)?;
            for version in &self.versions {
                let labels = [("version", version.version.as_str())];
                let mut family = metric.encode_family(&labels)?;
                match kind {
                    MetricType::Gauge => family.encode_gauge(&(read(version) as i64))?,
                    _ => family.encode_counter::<NoLabelSet, _, u64>(&read(version), None)?,
                }
            }
        }
        Ok(())
    }
}

/// The text a scraper gets: `snapshot` under `cdflow_route_`, labelled with the app and the
/// environment.
pub fn text(snapshot: Snapshot, app: &str, env: &str) -> String {
    let labels = [("app", app.to_string()), ("env", env.to_string())]
        .map(|(k, v)| (std::borrow::Cow::Borrowed(k), std::borrow::Cow::Owned(v)));
    let mut registry = Registry::with_prefix_and_labels("cdflow_route", labels.into_iter());
    registry.register_collector(Box::new(snapshot));
    let mut text = String::new();
    // Writing into a String does not fail.
    let _ = prometheus_client::encoding::text::encode(&mut text, &registry);
    text
}

/// Serves the route's metrics at `/metrics` on `listener` until the task is aborted. On the
/// server's runtime, next to the route: a scrape is rare and small.
pub async fn serve(listener: TcpListener, proxy: Arc<Proxy>, app: String, env: String) {
    let names = Arc::new((app, env));
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        };
        let proxy = Arc::clone(&proxy);
        let names = Arc::clone(&names);
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request: Request<_>| {
                let answer = if request.uri().path() == "/metrics" {
                    let body = text(proxy.stats(), &names.0, &names.1);
                    let mut response = Response::new(Full::new(Bytes::from(body)));
                    response.headers_mut().insert(
                        header::CONTENT_TYPE,
                        HeaderValue::from_static(
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        ),
                    );
                    response
                } else {
                    let mut response = Response::new(Full::new(Bytes::from_static(
                        b"the route serves its metrics at /metrics\n",
                    )));
                    *response.status_mut() = StatusCode::NOT_FOUND;
                    response
                };
                async move { Ok::<_, Infallible>(answer) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_by_version_method_and_class_and_their_text() {
        let metrics = Metrics::default();
        let one = metrics.version("1.0.0");
        let two = metrics.version("2.0.0");
        one.answered(&Method::GET, StatusCode::OK, Duration::from_millis(3));
        one.answered(
            &Method::GET,
            StatusCode::NOT_FOUND,
            Duration::from_millis(30),
        );
        one.answered(
            &Method::from_bytes(b"BREW").unwrap(),
            StatusCode::OK,
            Duration::ZERO,
        );
        two.answered(
            &Method::POST,
            StatusCode::BAD_GATEWAY,
            Duration::from_secs(20),
        );
        two.upstream_error();
        two.retry();
        assert!(Arc::ptr_eq(&one, &metrics.version("1.0.0")), "kept");
        let snapshot = metrics.snapshot(|v| if v.version == "1.0.0" { 2 } else { 0 });
        let first = &snapshot.versions[0];
        assert_eq!(
            first.version, "2.0.0",
            "a version asked for again moves after the others"
        );
        assert_eq!(first.latency.buckets[BUCKETS - 1], 1);
        assert_eq!(first.latency.count, 1);
        let text = text(snapshot, "web", "staging");
        for line in [
            r#"cdflow_route_requests_total{app="web",env="staging",version="1.0.0",method="GET",status="2xx"} 1"#,
            r#"cdflow_route_requests_total{app="web",env="staging",version="1.0.0",method="GET",status="4xx"} 1"#,
            r#"cdflow_route_requests_total{app="web",env="staging",version="1.0.0",method="other",status="2xx"} 1"#,
            r#"cdflow_route_requests_total{app="web",env="staging",version="2.0.0",method="POST",status="5xx"} 1"#,
            r#"cdflow_route_request_duration_seconds_bucket{app="web",env="staging",le="0.005",version="1.0.0"} 2"#,
            r#"cdflow_route_request_duration_seconds_count{app="web",env="staging",version="1.0.0"} 3"#,
            r#"cdflow_route_upstream_errors_total{app="web",env="staging",version="2.0.0"} 1"#,
            r#"cdflow_route_retries_total{app="web",env="staging",version="2.0.0"} 1"#,
            r#"cdflow_route_instances_healthy{app="web",env="staging",version="1.0.0"} 2"#,
        ] {
            assert!(text.lines().any(|l| l == line), "no {line} in\n{text}");
        }
    }

    #[test]
    fn only_the_last_versions_are_kept() {
        let metrics = Metrics::default();
        for n in 0..20 {
            metrics.version(&n.to_string());
        }
        let snapshot = metrics.snapshot(|_| 0);
        assert_eq!(snapshot.versions.len(), KEPT_VERSIONS);
        assert_eq!(snapshot.versions.last().unwrap().version, "19");
    }
}
