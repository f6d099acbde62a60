//! The router of an environment: a reverse proxy on its stable port that spreads requests over
//! the healthy instances of the deployment it points at.
//!
//! The route is one cell ([`ArcSwap`]) holding the current deployment's [`Slot`]s, one per
//! instance; a switch replaces it in one store. Each slot counts its requests in flight, so that
//! the server can let the old deployment finish what it was given before stopping it. A request
//! announces itself on a slot (increments `in_flight`) and only then checks that the slot is not
//! retired, while the server retires a slot (sets `retired`) and only then reads `in_flight`:
//! with sequentially consistent atomics, either the request sees the retirement and picks again
//! from the new route, or the server sees the request and waits for it.
//!
//! A canary ([`Proxy::start_canary`]) is a second cell of slots, the new version's, with a
//! weight: that percentage of the requests goes to the canary, the rest to the route's slots
//! (the stable version). The split is counted, not drawn: of every 100 requests, exactly
//! `weight` go to the canary, evenly spread ([`to_canary`]), for a counter and a little integer
//! arithmetic. A side with no slot to
//! offer (all unhealthy or retired) gives the request to the other; a retry may go to either.
//! Finishing a canary makes its slots the route; cancelling it empties the cell; in both, the
//! slots that leave are retired and drained with the same protocol as a switch. Without a
//! canary, the only cost on a request's way is one relaxed load of the weight.
//!
//! Connections to instances are pooled (HTTP/1.1 keep-alive) by hyper-util's client, keyed by
//! the instance's port. Every start of an instance gets a fresh port, and a retired slot is never
//! picked again, so a pooled connection to an old instance is never reused after a switch.
//!
//! Requests whose bodies are small (or absent) are buffered so that they can be sent again: to
//! another instance when an instance refuses the connection (the request never reached it), and
//! for idempotent methods also when an instance fails before answering (it was killed). For
//! those, a small answer (a Content-Length up to the same limit) is read whole before it is
//! passed on, so that an instance killed between its headers and its body fails no request
//! either. A
//! refused connection also takes that instance's process out of the route at once
//! ([`Backend::down`]): a crashed instance refuses connections for a moment before its
//! supervisor sees it exit, and without the mark every request of that moment would be sent
//! there again. With no other instance to go to, a request waits, as for a restart, for one
//! that is healthy and not marked; the instance's next passing health check lifts the mark.
//!
//! A request to switch protocols (`Connection: upgrade`, such as a WebSocket handshake) is
//! passed on with its `Upgrade` header; when the instance answers 101, the two connections are
//! joined and bytes flow both ways until either side closes. Such a tunnel is not counted in
//! flight: like Cloud Foundry's router, a switch does not wait for it, and it ends when its old
//! instance stops.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use arc_swap::{ArcSwap, ArcSwapOption};
use http_body_util::{BodyExt, Either, Full};
use hyper::body::{Body, Bytes, Frame, Incoming, SizeHint};
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::http::uri::{Authority, PathAndQuery, Scheme};
use hyper::{Method, Request, Response, StatusCode, Uri, Version};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Notify;

use super::logs::LogSink;
use super::metrics::{Metrics, Snapshot, VersionStats};

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type UpstreamBody = Either<Full<Bytes>, Incoming>;

/// Request bodies up to this size are buffered, so that the request can be retried.
const BUFFER_LIMIT: u64 = 1024 * 1024;
/// How many times one request may be tried, refused connections included (each one marks its
/// instance down, so they cannot go round in a loop).
const ATTEMPTS: usize = 8;
/// How many times an idempotent request may be sent and fail before an answer: an instance
/// that breaks the connection on one request, alive, would break it again.
const SENT_ATTEMPTS: usize = 3;
/// How long a request waits for a healthy instance when there is none (an instance restarting,
/// the first deployment starting) before it is answered 503.
const WAIT_FOR_INSTANCE: Duration = Duration::from_secs(10);

/// One instance as the router sees it.
#[derive(Debug)]
pub struct Slot {
    pub index: u32,
    pub healthy: AtomicBool,
    pub retired: AtomicBool,
    pub in_flight: AtomicUsize,
    /// The instance's current process, replaced at each restart.
    pub backend: ArcSwapOption<Backend>,
    /// Its version's counters: what it answers counts there.
    pub stats: Arc<VersionStats>,
}

impl Slot {
    pub fn new(index: u32, stats: Arc<VersionStats>) -> Slot {
        Slot {
            index,
            healthy: AtomicBool::new(false),
            retired: AtomicBool::new(false),
            in_flight: AtomicUsize::new(0),
            backend: ArcSwapOption::empty(),
            stats,
        }
    }
}

/// One process of an instance: where it listens.
#[derive(Debug)]
pub struct Backend {
    pub port: u16,
    authority: Authority,
    /// Set by the route when a connection to the port was refused: the process is dead or
    /// dying, whatever its supervisor knows yet. Never picked while set; a passing health check
    /// clears it (see [`Backend::back_up`]), and a restart brings a new backend anyway.
    down: AtomicBool,
}

impl Backend {
    pub fn new(port: u16) -> Backend {
        let authority = Authority::try_from(format!("127.0.0.1:{port}").as_str())
            .expect("an IPv4 address and a port make an authority");
        Backend {
            port,
            authority,
            down: AtomicBool::new(false),
        }
    }

    /// Puts the backend back into the route after the route marked it down; true if it was.
    pub fn back_up(&self) -> bool {
        self.down.swap(false, Ordering::AcqRel)
    }
}

/// A request counted on its slot until its response body is done or dropped.
struct InFlight(Arc<Slot>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The slots a request already tried, by address (0: none); a slot's address is stable while
/// any route holds it.
type Tried = [usize; ATTEMPTS];

fn key(slot: &Arc<Slot>) -> usize {
    Arc::as_ptr(slot) as usize
}

/// A slot picked for one attempt, its current process, and the request counted in flight.
type Picked = (Arc<Slot>, Arc<Backend>, InFlight);

pub struct Proxy {
    route: ArcSwap<Vec<Arc<Slot>>>,
    next: AtomicUsize,
    /// A canary's slots (empty when none runs), and the percentage of requests they get.
    canary: ArcSwap<Vec<Arc<Slot>>>,
    weight: AtomicU32,
    /// Counts the requests split between the canary and the route: one a request, whatever its
    /// attempts (see [`draw`]).
    split: AtomicUsize,
    client: Client<HttpConnector, UpstreamBody>,
    /// Woken when the route switches or an instance's health changes.
    changed: Notify,
    /// For the route's own events: an instance it took out.
    logs: LogSink,
    /// What the route counts per version; `None` when the metrics are off (see
    /// [`METRICS_SWITCH`]).
    metrics: Option<Metrics>,
}

/// The environment variable that turns the route's metrics off when it is `off` in the
/// server's environment: for `bench/metrics`, which measures what they cost.
pub const METRICS_SWITCH: &str = "CDFLOW_ROUTE_METRICS";

impl Proxy {
    pub fn new(logs: LogSink) -> Proxy {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(Duration::from_secs(2)));
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            // Shorter than the idle timeouts of common servers, so that the pool drops a
            // connection before the instance does.
            .pool_idle_timeout(Duration::from_secs(4))
            .pool_max_idle_per_host(256)
            .build(connector);
        Proxy {
            route: ArcSwap::from_pointee(Vec::new()),
            next: AtomicUsize::new(0),
            canary: ArcSwap::from_pointee(Vec::new()),
            weight: AtomicU32::new(0),
            split: AtomicUsize::new(0),
            client,
            changed: Notify::new(),
            logs,
            metrics: (std::env::var_os(METRICS_SWITCH).as_deref()
                != Some(std::ffi::OsStr::new("off")))
            .then(Metrics::default),
        }
    }

    /// Whether the route counts what it serves.
    pub fn counts(&self) -> bool {
        self.metrics.is_some()
    }

    /// The counters of `version`, for its instances' slots (unused counters when the metrics
    /// are off).
    pub fn version_stats(&self, version: &str) -> Arc<VersionStats> {
        match &self.metrics {
            Some(metrics) => metrics.version(version),
            None => Arc::new(VersionStats::new(version)),
        }
    }

    /// What the route has counted, per version, with each one's healthy instances in the route
    /// now.
    pub fn stats(&self) -> Snapshot {
        let Some(metrics) = &self.metrics else {
            return Snapshot {
                versions: Vec::new(),
            };
        };
        let route = self.route.load();
        let canary = self.canary.load();
        metrics.snapshot(|version| {
            route
                .iter()
                .chain(canary.iter())
                .filter(|slot| {
                    std::ptr::eq(Arc::as_ptr(&slot.stats), version)
                        && slot.healthy.load(Ordering::Acquire)
                        && !slot.retired.load(Ordering::Acquire)
                })
                .count() as u32
        })
    }

    /// Points the route at `slots`, in one step.
    pub fn switch(&self, slots: Vec<Arc<Slot>>) {
        self.route.store(Arc::new(slots));
        self.changed.notify_waiters();
    }

    /// Gives `slots` (a canary's) `weight` percent of the requests, the route the rest.
    pub fn start_canary(&self, slots: Vec<Arc<Slot>>, weight: u32) {
        self.canary.store(Arc::new(slots));
        self.set_weight(weight);
    }

    /// The canary's share of the requests, in percent.
    pub fn set_weight(&self, weight: u32) {
        self.weight.store(weight.min(100), Ordering::SeqCst);
        self.changed.notify_waiters();
    }

    /// Makes the canary the whole route, in one step; the caller retires the slots it replaced.
    pub fn finish_canary(&self) {
        let canary = self.canary.load_full();
        self.route.store(canary);
        self.end_canary();
    }

    /// Gives the route back all the requests; the caller retires the canary's slots.
    pub fn end_canary(&self) {
        self.weight.store(0, Ordering::SeqCst);
        self.canary.store(Arc::new(Vec::new()));
        self.changed.notify_waiters();
    }

    /// Tells waiting requests that an instance's health changed.
    pub fn notify(&self) {
        self.changed.notify_waiters();
    }

    /// Accepts connections on `listener` until the task is aborted.
    pub async fn serve(self: Arc<Self>, listener: TcpListener) {
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(_) => {
                    // Out of file descriptors, say: let some close.
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let proxy = Arc::clone(&self);
            let forwarded_for = HeaderValue::from_str(&peer.ip().to_string())
                .unwrap_or(HeaderValue::from_static("unknown"));
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request| {
                    let proxy = Arc::clone(&proxy);
                    let forwarded_for = forwarded_for.clone();
                    async move { Ok::<_, Infallible>(proxy.handle(request, forwarded_for).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .keep_alive(true)
                    .serve_connection(TokioIo::new(stream), service)
                    .with_upgrades()
                    .await;
            });
        }
    }

    /// Forwards the request and counts its answer for the version that gave it.
    async fn handle(
        &self,
        request: Request<Incoming>,
        forwarded_for: HeaderValue,
    ) -> Response<ProxyBody> {
        let mut answered_by = None;
        if self.metrics.is_none() {
            return self.forward(request, forwarded_for, &mut answered_by).await;
        }
        let started = Instant::now();
        let method = request.method().clone();
        let response = self.forward(request, forwarded_for, &mut answered_by).await;
        // Answered by the route itself with no instance tried: the version it points at.
        let stats = answered_by.or_else(|| self.route.load().first().map(|s| Arc::clone(&s.stats)));
        if let Some(stats) = stats {
            stats.answered(&method, response.status(), started.elapsed());
        }
        response
    }

    /// Sends the request to an instance, again to another when it may; `answered_by` is set to
    /// the version of the last instance tried.
    async fn forward(
        &self,
        mut request: Request<Incoming>,
        forwarded_for: HeaderValue,
        answered_by: &mut Option<Arc<VersionStats>>,
    ) -> Response<ProxyBody> {
        // Only HTTP/1.1 switches protocols (hyper hands over no connection of HTTP/1.0).
        let asks_upgrade =
            request.version() == Version::HTTP_11 && upgrade_asked(request.headers());
        let upgrade = asks_upgrade.then(|| {
            let protocol = request.headers().get(header::UPGRADE).cloned();
            (protocol, hyper::upgrade::on(&mut request))
        });
        let (mut parts, body) = request.into_parts();
        remove_hop_by_hop(&mut parts.headers);
        if let Some((Some(protocol), _)) = &upgrade {
            parts.headers.insert(header::UPGRADE, protocol.clone());
            parts
                .headers
                .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        }
        parts
            .headers
            .append(HeaderName::from_static("x-forwarded-for"), forwarded_for);
        parts.headers.insert(
            HeaderName::from_static("x-forwarded-proto"),
            HeaderValue::from_static("http"),
        );
        let path = parts
            .uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));

        // A body is buffered when it is small, so that the request can be sent again.
        let mut streamed = None;
        let buffered = if body.is_end_stream() {
            Some(Bytes::new())
        } else if body.size_hint().upper().is_some_and(|n| n <= BUFFER_LIMIT) {
            match body.collect().await {
                Ok(collected) => Some(collected.to_bytes()),
                Err(err) => {
                    return text(
                        StatusCode::BAD_REQUEST,
                        format!("could not read the request body: {err}\n"),
                    )
                }
            }
        } else {
            streamed = Some(body);
            None
        };
        let idempotent = matches!(
            parts.method,
            Method::GET
                | Method::HEAD
                | Method::OPTIONS
                | Method::TRACE
                | Method::PUT
                | Method::DELETE
        );

        let started = Instant::now();
        let mut tried: Tried = [0; ATTEMPTS];
        // The side of a canary's split this request was given, drawn once for all its attempts.
        let mut side = None;
        let mut sent_and_failed = 0;
        let mut last_error = String::new();
        for attempt in 0..ATTEMPTS {
            let Some((slot, backend, guard)) = self.pick(&tried, &mut side, started).await else {
                break;
            };
            tried[attempt] = key(&slot);
            if self.metrics.is_some() {
                *answered_by = Some(Arc::clone(&slot.stats));
            }
            let body = match (&buffered, streamed.take()) {
                (Some(bytes), _) => Either::Left(Full::new(bytes.clone())),
                (None, Some(body)) => Either::Right(body),
                (None, None) => break,
            };
            let can_retry = buffered.is_some() && attempt + 1 < ATTEMPTS;
            let headers = if can_retry {
                parts.headers.clone()
            } else {
                std::mem::take(&mut parts.headers)
            };
            let uri = {
                let mut uri = hyper::http::uri::Parts::default();
                uri.scheme = Some(Scheme::HTTP);
                uri.authority = Some(backend.authority.clone());
                uri.path_and_query = Some(path.clone());
                Uri::from_parts(uri).expect("scheme, authority and path make a URI")
            };
            let mut upstream = Request::new(body);
            *upstream.method_mut() = parts.method.clone();
            *upstream.uri_mut() = uri;
            *upstream.version_mut() = Version::HTTP_11;
            *upstream.headers_mut() = headers;
            match self.client.request(upstream).await {
                Ok(mut response) if response.status() == StatusCode::SWITCHING_PROTOCOLS => {
                    let Some((_, client_side)) = upgrade else {
                        drop(guard);
                        last_error = format!(
                            "instance {} (port {}) switched protocols unasked",
                            slot.index, backend.port
                        );
                        break;
                    };
                    let instance_side = hyper::upgrade::on(&mut response);
                    tokio::spawn(tunnel(client_side, instance_side));
                    let (mut head, _) = response.into_parts();
                    let protocol = head.headers.get(header::UPGRADE).cloned();
                    remove_hop_by_hop(&mut head.headers);
                    if let Some(protocol) = protocol {
                        head.headers.insert(header::UPGRADE, protocol);
                    }
                    head.headers
                        .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
                    // The tunnel is not in flight: the guard goes here.
                    drop(guard);
                    return Response::from_parts(head, ProxyBody::Local(Full::new(Bytes::new())));
                }
                Ok(response) => {
                    let (mut head, body) = response.into_parts();
                    remove_hop_by_hop(&mut head.headers);
                    // A small answer to a request that may be sent again is read whole before
                    // it is passed on: an instance killed between its headers and its body
                    // (gunicorn and Python's http.server write them apart) would otherwise cut
                    // the client's connection mid-answer; this way the request goes elsewhere.
                    let small = body.size_hint().upper().is_some_and(|n| n <= BUFFER_LIMIT);
                    if !(idempotent && can_retry && small) || body.is_end_stream() {
                        return Response::from_parts(
                            head,
                            ProxyBody::Upstream {
                                body,
                                _guard: guard,
                            },
                        );
                    }
                    let read = body.collect().await;
                    drop(guard);
                    match read {
                        Ok(whole) => {
                            return Response::from_parts(
                                head,
                                ProxyBody::Local(Full::new(whole.to_bytes())),
                            );
                        }
                        Err(err) => {
                            last_error = format!(
                                "instance {} (port {}) broke off its answer: {}",
                                slot.index,
                                backend.port,
                                error_chain(&err)
                            );
                            slot.stats.upstream_error();
                            sent_and_failed += 1;
                            if sent_and_failed >= SENT_ATTEMPTS {
                                break;
                            }
                            slot.stats.retry();
                        }
                    }
                }
                Err(err) => {
                    drop(guard);
                    last_error = format!(
                        "instance {} (port {}): {}",
                        slot.index,
                        backend.port,
                        error_chain(&err)
                    );
                    let retry = if err.is_connect() {
                        // Nothing listens there: no request of this route goes there again
                        // until it passes a health check. A connect that timed out may be a
                        // full backlog under a burst, not a dead instance: retried, not marked.
                        if refused(&err) && !backend.down.swap(true, Ordering::AcqRel) {
                            self.logs.event(
                                &format!("RTR/{}", slot.index),
                                format!(
                                    "{last_error}; out of the route until it passes a health check"
                                ),
                            );
                        }
                        can_retry
                    } else {
                        sent_and_failed += 1;
                        can_retry && idempotent && sent_and_failed < SENT_ATTEMPTS
                    };
                    slot.stats.upstream_error();
                    if !retry {
                        break;
                    }
                    slot.stats.retry();
                }
            }
        }
        if last_error.is_empty() {
            text(
                StatusCode::SERVICE_UNAVAILABLE,
                "503 no healthy instance serves this route\n".into(),
            )
        } else {
            text(
                StatusCode::BAD_GATEWAY,
                format!("502 the app did not answer: {last_error}\n"),
            )
        }
    }

    /// A healthy slot of the current route (or of the canary, for its share) not yet tried,
    /// counted as in flight; waits for one while there is none, up to [`WAIT_FOR_INSTANCE`]
    /// since `since`. `side` is the request's side of a canary's split (see [`draw`]).
    async fn pick(&self, tried: &Tried, side: &mut Option<bool>, since: Instant) -> Option<Picked> {
        loop {
            if let Some(picked) = self.try_pick(tried, side) {
                return Some(picked);
            }
            // Registered before looking again, so that a change in between is not missed;
            // only here, since registering takes the notifier's lock.
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if let Some(picked) = self.try_pick(tried, side) {
                return Some(picked);
            }
            let left = WAIT_FOR_INSTANCE.checked_sub(since.elapsed())?;
            // Polled as well as notified, to be safe from a missed change.
            let _ = tokio::time::timeout(left.min(Duration::from_millis(25)), changed).await;
        }
    }

    /// Round robin over the healthy slots not yet tried whose process is not marked down, on
    /// the side the split gives (the canary's or the route's), then on the other; when there
    /// is none, any such slot already tried (a retry on the same instance beats a 502).
    fn try_pick(&self, tried: &Tried, side: &mut Option<bool>) -> Option<Picked> {
        let route = self.route.load();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        // A first attempt has tried nothing: one pass, with no look at what was tried.
        let passes: &[Option<bool>] = if tried[0] != 0 {
            &[Some(false), Some(true)]
        } else {
            &[None]
        };
        let weight = self.weight.load(Ordering::Relaxed);
        if weight == 0 {
            return passes
                .iter()
                .find_map(|want| self.scan(&route, start, tried, *want));
        }
        let canary = self.canary.load();
        let sides: [&[Arc<Slot>]; 2] = if draw(&self.split, side, weight) {
            [&canary, &route]
        } else {
            [&route, &canary]
        };
        passes.iter().find_map(|want| {
            sides
                .iter()
                .find_map(|side| self.scan(side, start, tried, *want))
        })
    }

    /// A healthy slot of `slots` from `start` round, counted in flight: any, or with `want`
    /// only those tried (`Some(true)`) or not (`Some(false)`).
    fn scan(
        &self,
        slots: &[Arc<Slot>],
        start: usize,
        tried: &Tried,
        want: Option<bool>,
    ) -> Option<Picked> {
        let n = slots.len();
        for k in 0..n {
            let slot = &slots[(start + k) % n];
            if want.is_some_and(|want| tried.contains(&key(slot)) != want)
                || !slot.healthy.load(Ordering::Acquire)
            {
                continue;
            }
            slot.in_flight.fetch_add(1, Ordering::SeqCst);
            let guard = InFlight(Arc::clone(slot));
            if slot.retired.load(Ordering::SeqCst) {
                // Switched away since the route was loaded; the caller looks again.
                continue;
            }
            if let Some(backend) = slot.backend.load_full() {
                if !backend.down.load(Ordering::Acquire) {
                    return Some((Arc::clone(slot), backend, guard));
                }
            }
        }
        None
    }
}

/// Whether a request goes to the canary: drawn from the split's counter at its first pick with
/// a canary in the route, and kept in `side` for its other picks (the waits for a healthy
/// instance, the retries), so that the counter counts requests, and the canary gets exactly its
/// weight of every 100.
fn draw(split: &AtomicUsize, side: &mut Option<bool>, weight: u32) -> bool {
    *side.get_or_insert_with(|| to_canary(split.fetch_add(1, Ordering::Relaxed), weight))
}

/// Whether the `n`th request split goes to the canary: `weight` of every 100 (from a multiple
/// of 100), evenly spread as a line drawn on a grid is: each time `k * weight / 100` steps up.
fn to_canary(n: usize, weight: u32) -> bool {
    let (k, weight) = (n % 100, weight.min(100) as usize);
    (k + 1) * weight / 100 > k * weight / 100
}

/// Whether the request asks to switch protocols: `Upgrade` present and named in `Connection`.
fn upgrade_asked(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE)
        && headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .any(|token| token.trim().eq_ignore_ascii_case("upgrade"))
}

/// Joins a client's upgraded connection with its instance's, until either side closes.
async fn tunnel(client: hyper::upgrade::OnUpgrade, instance: hyper::upgrade::OnUpgrade) {
    let (Ok(client), Ok(instance)) = tokio::join!(client, instance) else {
        return;
    };
    let _ =
        tokio::io::copy_bidirectional(&mut TokioIo::new(client), &mut TokioIo::new(instance)).await;
}

/// Headers that belong to one connection, not to the message (RFC 9110, 7.6.1).
fn remove_hop_by_hop(headers: &mut HeaderMap) {
    if let Some(listed) = headers.get(header::CONNECTION).cloned() {
        if let Ok(listed) = listed.to_str() {
            for name in listed.split(',') {
                let name = name.trim();
                if !name.is_empty()
                    && !name.eq_ignore_ascii_case("close")
                    && !name.eq_ignore_ascii_case("keep-alive")
                {
                    headers.remove(name);
                }
            }
        }
    }
    for name in [
        header::CONNECTION,
        header::PROXY_AUTHENTICATE,
        header::PROXY_AUTHORIZATION,
        header::TE,
        header::TRAILER,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
    ] {
        headers.remove(name);
    }
    headers.remove("keep-alive");
    headers.remove("proxy-connection");
}

fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

fn text(status: StatusCode, body: String) -> Response<ProxyBody> {
    let mut response = Response::new(ProxyBody::Local(Full::new(Bytes::from(body))));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// What the router answers: an instance's body (counted in flight until done), or its own.
enum ProxyBody {
    Upstream { body: Incoming, _guard: InFlight },
    Local(Full<Bytes>),
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            ProxyBody::Upstream { body, .. } => Pin::new(body)
                .poll_frame(cx)
                .map(|frame| frame.map(|result| result.map_err(Into::into))),
            ProxyBody::Local(full) => Pin::new(full)
                .poll_frame(cx)
                .map(|frame| frame.map(|result| result.map_err(|never| match never {}))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Upstream { body, .. } => body.is_end_stream(),
            ProxyBody::Local(full) => full.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Upstream { body, .. } => body.size_hint(),
            ProxyBody::Local(full) => full.size_hint(),
        }
    }
}

/// Whether a connect failed because nothing listens on the port (as opposed to timing out).
fn refused(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(error) = source {
        if let Some(io) = error.downcast_ref::<std::io::Error>() {
            return io.kind() == std::io::ErrorKind::ConnectionRefused;
        }
        source = error.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_canary_gets_its_weight_of_every_hundred_requests_spread_out() {
        for weight in [0, 1, 10, 25, 50, 99, 100] {
            for start in [0, 300, 1_000_000] {
                let picked: Vec<bool> =
                    (start..start + 100).map(|n| to_canary(n, weight)).collect();
                assert_eq!(
                    picked.iter().filter(|p| **p).count(),
                    weight as usize,
                    "weight {weight} from {start}"
                );
            }
        }
        // Evenly: 10% is every 10th request, 30% every third or fourth.
        let gaps = |weight| {
            (0..1000usize)
                .filter(|n| to_canary(*n, weight))
                .collect::<Vec<_>>()
                .windows(2)
                .map(|w| w[1] - w[0])
                .collect::<Vec<_>>()
        };
        assert!(gaps(10).iter().all(|gap| *gap == 10), "{:?}", gaps(10));
        assert!(
            gaps(30).iter().all(|gap| (3..=4).contains(gap)),
            "{:?}",
            gaps(30)
        );
        // Per request, not per pick: requests picked again (retried, or waiting for a healthy
        // instance) keep their side and take no other's turn.
        for weight in [1, 10, 25, 50] {
            let split = AtomicUsize::new(0);
            let to_canary: usize = (0..100)
                .map(|request| {
                    let mut side = None;
                    let first = draw(&split, &mut side, weight);
                    for _ in 0..request % 4 {
                        assert_eq!(draw(&split, &mut side, weight), first);
                    }
                    first as usize
                })
                .sum();
            assert_eq!(to_canary, weight as usize, "weight {weight}");
            assert_eq!(split.load(Ordering::Relaxed), 100, "weight {weight}");
        }
    }
}
