//! Request counters by route, method and status, in the Prometheus text format.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;

#[derive(Debug, Default)]
pub struct Metrics {
    /// (route, method, status) -> requests. Routes are the router's patterns (or
    /// `unmatched`), never raw paths, so clients cannot make new series at will.
    requests: Mutex<BTreeMap<(String, String, u16), u64>>,
}

impl Metrics {
    pub fn record(&self, route: &str, method: &str, status: u16) {
        let mut requests = self.requests.lock().unwrap_or_else(|e| e.into_inner());
        *requests
            .entry((route.to_string(), method.to_string(), status))
            .or_default() += 1;
    }

    pub fn render(&self) -> String {
        let requests = self.requests.lock().unwrap_or_else(|e| e.into_inner());
        let mut text = String::from(
            "# HELP http_requests_total Requests answered, by route, method and status.\n\
             # TYPE http_requests_total counter\n",
        );
        for ((route, method, status), count) in requests.iter() {
            // Labels are written piece by piece: Prometheus braces would need escaping in a
            // format string.
            text.push_str("http_requests_total{");
            let _ = write!(
                text,
                "route=\"{route}\",method=\"{method}\",status=\"{status}\""
            );
            let _ = writeln!(text, "}} {count}");
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_by_route_method_and_status() {
        let metrics = Metrics::default();
        metrics.record("/", "GET", 200);
        metrics.record("/", "GET", 200);
        metrics.record("/", "POST", 415);
        let text = metrics.render();
        assert!(
            text.contains("http_requests_total{route=\"/\",method=\"GET\",status=\"200\"} 2\n")
        );
        assert!(
            text.contains("http_requests_total{route=\"/\",method=\"POST\",status=\"415\"} 1\n")
        );
    }
}
