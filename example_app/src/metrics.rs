//! Request metrics (counts by route, method and status; a latency histogram) and their Prometheus text rendering.
//!
//! Every series is an atomic at a fixed index, chosen from labels known when
//! the service starts: the router's routes plus one `unmatched` route, a fixed
//! list of methods plus `OTHER`, and status codes 100..=599. So recording is a
//! few relaxed atomic adds with no lock and no allocation, and no client can
//! create new series by sending odd paths or methods.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use axum::http::Method;

/// The `route` label for requests that matched no route (404s).
pub const UNMATCHED: &str = "unmatched";

const METHODS: [&str; 10] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "CONNECT", "OTHER",
];

/// Status codes 100..=599 each have a slot; the last slot holds anything else.
const STATUS_SLOTS: usize = 501;

/// Upper bounds of the latency buckets, in seconds, as Prometheus prints them.
/// Fine-grained below 10 ms because that is where this service lives.
const BUCKET_LABELS: [&str; 14] = [
    "0.0005", "0.001", "0.0025", "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1",
    "2.5", "5", "10",
];
const BUCKET_BOUNDS_NANOS: [u64; 14] = [
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    5_000_000_000,
    10_000_000_000,
];
/// The finite buckets plus +Inf.
const BUCKETS: usize = BUCKET_BOUNDS_NANOS.len() + 1;

pub struct Metrics {
    /// Route labels by index; the last one is [`UNMATCHED`].
    routes: Vec<&'static str>,
    /// `[route][method][status slot]`
    requests: Box<[AtomicU64]>,
    /// `[route][method][bucket]`, not cumulative: each request lands in one
    /// bucket and rendering adds them up, so recording is one add.
    buckets: Box<[AtomicU64]>,
    /// `[route][method]`, total latency in nanoseconds.
    sum_nanos: Box<[AtomicU64]>,
    in_flight: AtomicI64,
}

/// Decrements the in-flight gauge when dropped, so a request whose client
/// went away (its future dropped) is not counted as in flight forever.
pub struct InFlight<'a>(&'a AtomicI64);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Relaxed);
    }
}

fn zeroed(n: usize) -> Box<[AtomicU64]> {
    (0..n).map(|_| AtomicU64::new(0)).collect()
}

impl Metrics {
    /// `routes` are the router's paths, exactly as registered (what MatchedPath reports).
    pub fn new(routes: impl IntoIterator<Item = &'static str>) -> Metrics {
        let mut routes: Vec<&'static str> = routes.into_iter().collect();
        routes.push(UNMATCHED);
        let pairs = routes.len() * METHODS.len();
        Metrics {
            routes,
            requests: zeroed(pairs * STATUS_SLOTS),
            buckets: zeroed(pairs * BUCKETS),
            sum_nanos: zeroed(pairs),
            in_flight: AtomicI64::new(0),
        }
    }

    /// The index for a matched route; `None` or an unknown path is unmatched.
    pub fn route_index(&self, matched: Option<&str>) -> usize {
        let unmatched = self.routes.len() - 1;
        matched
            .and_then(|m| self.routes[..unmatched].iter().position(|r| *r == m))
            .unwrap_or(unmatched)
    }

    pub fn start(&self) -> InFlight<'_> {
        self.in_flight.fetch_add(1, Relaxed);
        InFlight(&self.in_flight)
    }

    /// Requests being handled now.
    pub fn in_flight(&self) -> u64 {
        self.in_flight.load(Relaxed).max(0) as u64
    }

    pub fn record(&self, route: usize, method: &Method, status: u16, elapsed: Duration) {
        let pair = route * METHODS.len() + method_index(method);
        let status_slot = match status {
            100..=599 => usize::from(status - 100),
            _ => STATUS_SLOTS - 1,
        };
        self.requests[pair * STATUS_SLOTS + status_slot].fetch_add(1, Relaxed);

        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        let bucket = BUCKET_BOUNDS_NANOS
            .iter()
            .position(|&bound| nanos <= bound)
            .unwrap_or(BUCKETS - 1);
        self.buckets[pair * BUCKETS + bucket].fetch_add(1, Relaxed);
        self.sum_nanos[pair].fetch_add(nanos, Relaxed);
    }

    /// The Prometheus text exposition format (version 0.0.4). Only series
    /// that have seen a request are written.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        out.push_str(
            "# HELP http_requests_total Requests answered, by matched route, method and status.\n\
             # TYPE http_requests_total counter\n",
        );
        for (r, route) in self.routes.iter().enumerate() {
            for (m, method) in METHODS.iter().enumerate() {
                let pair = r * METHODS.len() + m;
                let slots = &self.requests[pair * STATUS_SLOTS..(pair + 1) * STATUS_SLOTS];
                for (slot, count) in slots.iter().enumerate() {
                    let count = count.load(Relaxed);
                    if count == 0 {
                        continue;
                    }
                    let status = if slot == STATUS_SLOTS - 1 {
                        "other".to_owned()
                    } else {
                        (slot + 100).to_string()
                    };
                    let _ = writeln!(
                        out,
                        "http_requests_total{{route=\"{route}\",method=\"{method}\",status=\"{status}\"}} {count}"
                    );
                }
            }
        }

        out.push_str(
            "# HELP http_request_duration_seconds Time from request to response headers, by matched route and method.\n\
             # TYPE http_request_duration_seconds histogram\n",
        );
        for (r, route) in self.routes.iter().enumerate() {
            for (m, method) in METHODS.iter().enumerate() {
                let pair = r * METHODS.len() + m;
                let counts: Vec<u64> = self.buckets[pair * BUCKETS..(pair + 1) * BUCKETS]
                    .iter()
                    .map(|b| b.load(Relaxed))
                    .collect();
                let total: u64 = counts.iter().sum();
                if total == 0 {
                    continue;
                }
                let labels = format!("route=\"{route}\",method=\"{method}\"");
                let mut cumulative = 0;
                for (le, count) in BUCKET_LABELS.iter().chain(["+Inf"].iter()).zip(&counts) {
                    cumulative += count;
                    let _ = writeln!(
                        out,
                        "http_request_duration_seconds_bucket{{{labels},le=\"{le}\"}} {cumulative}"
                    );
                }
                let sum = self.sum_nanos[pair].load(Relaxed) as f64 / 1e9;
                let _ = writeln!(out, "http_request_duration_seconds_sum{{{labels}}} {sum}");
                // The count is the buckets' total, so it always equals the +Inf bucket.
                let _ = writeln!(
                    out,
                    "http_request_duration_seconds_count{{{labels}}} {total}"
                );
            }
        }

        out.push_str(
            "# HELP http_requests_in_flight Requests being handled now, this scrape included.\n\
             # TYPE http_requests_in_flight gauge\n",
        );
        let _ = writeln!(
            out,
            "http_requests_in_flight {}",
            self.in_flight.load(Relaxed)
        );
        out
    }
}

fn method_index(method: &Method) -> usize {
    match *method {
        Method::GET => 0,
        Method::HEAD => 1,
        Method::POST => 2,
        Method::PUT => 3,
        Method::DELETE => 4,
        Method::PATCH => 5,
        Method::OPTIONS => 6,
        Method::TRACE => 7,
        Method::CONNECT => 8,
        _ => 9,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_histogram_render_in_prometheus_format() {
        let m = Metrics::new(["/", "/health"]);
        let root = m.route_index(Some("/"));
        m.record(root, &Method::POST, 200, Duration::from_micros(300));
        m.record(root, &Method::POST, 200, Duration::from_millis(3));
        m.record(root, &Method::POST, 415, Duration::from_millis(30));
        let text = m.render();
        assert!(
            text.contains("http_requests_total{route=\"/\",method=\"POST\",status=\"200\"} 2\n")
        );
        assert!(
            text.contains("http_requests_total{route=\"/\",method=\"POST\",status=\"415\"} 1\n")
        );
        let series = "http_request_duration_seconds_bucket{route=\"/\",method=\"POST\"";
        assert!(text.contains(&format!("{series},le=\"0.0005\"}} 1\n")));
        assert!(text.contains(&format!("{series},le=\"0.005\"}} 2\n")));
        assert!(text.contains(&format!("{series},le=\"0.05\"}} 3\n")));
        assert!(text.contains(&format!("{series},le=\"+Inf\"}} 3\n")));
        assert!(
            text.contains("http_request_duration_seconds_count{route=\"/\",method=\"POST\"} 3\n")
        );
        assert!(text
            .contains("http_request_duration_seconds_sum{route=\"/\",method=\"POST\"} 0.0333\n"));
        // Routes that saw nothing are not rendered.
        assert!(!text.contains("/health"));
    }

    #[test]
    fn odd_labels_fold_into_fixed_buckets() {
        let m = Metrics::new(["/"]);
        assert_eq!(m.route_index(Some("/nope")), m.route_index(None));
        let odd = Method::from_bytes(b"BREW").unwrap();
        m.record(m.route_index(None), &odd, 999, Duration::from_secs(60));
        let text = m.render();
        assert!(text.contains(
            "http_requests_total{route=\"unmatched\",method=\"OTHER\",status=\"other\"} 1\n"
        ));
        assert!(text.contains(
            "http_request_duration_seconds_bucket{route=\"unmatched\",method=\"OTHER\",le=\"10\"} 0\n"
        ));
    }

    #[test]
    fn in_flight_gauge_follows_guards() {
        let m = Metrics::new(["/"]);
        let a = m.start();
        let b = m.start();
        assert!(m.render().contains("http_requests_in_flight 2\n"));
        drop(a);
        drop(b);
        assert!(m.render().contains("http_requests_in_flight 0\n"));
    }
}
