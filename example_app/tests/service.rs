//! Service tier: the built binary started as a real process on a free loopback port, exercised over HTTP, then stopped with signals.
//!
//! Run alone with `cargo test -p example_app --test service`. Every process
//! a test starts is owned by an `App` guard that kills it when dropped, so a
//! failing assertion never leaves a server behind.
#![cfg(unix)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_example_app");
const STARTUP_TIMEOUT: Duration = Duration::from_secs(10);

/// A running example_app; killed (and reaped) on drop.
struct App {
    child: Child,
    addr: SocketAddr,
    stdout: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<Vec<String>>>,
    http: reqwest::blocking::Client,
}

impl Drop for App {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port that was free a moment ago: the app must be given its port through
/// PORT, so bind port 0, read what the kernel chose, and release it.
fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().unwrap().port()
}

/// Collects a pipe's lines on a thread, so the app never blocks on a full pipe.
fn drain(pipe: impl Read + Send + 'static) -> Arc<Mutex<Vec<String>>> {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let sink = lines.clone();
    thread::spawn(move || {
        for line in BufReader::new(pipe).lines().map_while(Result::ok) {
            sink.lock().unwrap().push(line);
        }
    });
    lines
}

impl App {
    /// Starts the app with `env` (and nothing else from this process's
    /// environment) and waits until `/health` answers.
    fn start(env: &[(&str, &str)]) -> App {
        // Another process may take the port between free_port and the app's
        // bind; a couple of tries make that race harmless.
        let mut last_error = String::new();
        for _ in 0..3 {
            match App::try_start(env) {
                Ok(app) => return app,
                Err(err) => last_error = err,
            }
        }
        panic!("the app did not start: {last_error}");
    }

    fn try_start(env: &[(&str, &str)]) -> Result<App, String> {
        let port = free_port();
        let mut child = Command::new(BIN)
            .env_clear()
            .env("PORT", port.to_string())
            .env("BIND_ADDR", "127.0.0.1")
            .env("LOG_LEVEL", "info")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot run {BIN}: {e}"))?;
        let stdout = drain(child.stdout.take().unwrap());
        let stderr = drain(child.stderr.take().unwrap());
        let mut app = App {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            stdout,
            stderr,
            http: reqwest::blocking::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()
                .unwrap(),
        };
        app.wait_healthy()?;
        Ok(app)
    }

    fn wait_healthy(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        while Instant::now() < deadline {
            if let Ok(r) = self.http.get(self.url("/health")).send() {
                if r.status() == 200 {
                    return Ok(());
                }
            }
            // The app died (its port was taken, say): give up on this try.
            if let Ok(Some(status)) = self.child.try_wait() {
                thread::sleep(Duration::from_millis(100));
                return Err(format!(
                    "exited with {status}; stderr: {:?}",
                    self.stderr.lock().unwrap()
                ));
            }
            thread::sleep(Duration::from_millis(50));
        }
        Err(format!(
            "no answer from /health on {} within {STARTUP_TIMEOUT:?}; stderr: {:?}",
            self.addr,
            self.stderr.lock().unwrap()
        ))
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    fn signal(&self, signal: libc::c_int) {
        let pid = libc::pid_t::try_from(self.child.id()).unwrap();
        // SAFETY: kill(2) with a pid this test started and still owns (not yet reaped).
        let rc = unsafe { libc::kill(pid, signal) };
        assert_eq!(rc, 0, "kill failed");
    }

    /// Waits for the process to exit, or panics after `timeout`.
    fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "the app did not exit within {timeout:?}; log: {:?}",
                self.stdout.lock().unwrap()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// stdout as parsed JSON lines; every line must be JSON.
    fn log(&self) -> Vec<Value> {
        // The drain thread may lag the process by a moment.
        thread::sleep(Duration::from_millis(100));
        self.stdout
            .lock()
            .unwrap()
            .iter()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
            .collect()
    }

    fn log_messages(&self) -> Vec<String> {
        self.log()
            .iter()
            .map(|l| l["msg"].as_str().unwrap_or("").to_owned())
            .collect()
    }

    fn metrics(&self) -> String {
        self.http
            .get(self.url("/metrics"))
            .send()
            .unwrap()
            .text()
            .unwrap()
    }

    /// Opens a connection and sends a POST's headers and the first `sent`
    /// bytes of `body`, leaving the request in flight; returns once the app
    /// counts it as in flight.
    fn start_slow_post(&self, body: &str, sent: usize) -> TcpStream {
        let mut conn = TcpStream::connect(self.addr).unwrap();
        conn.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let head = format!(
            "POST / HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            self.addr,
            body.len()
        );
        conn.write_all(head.as_bytes()).unwrap();
        conn.write_all(&body.as_bytes()[..sent]).unwrap();
        conn.flush().unwrap();

        // The scrape itself is one request in flight; the slow POST the other.
        let deadline = Instant::now() + Duration::from_secs(5);
        while in_flight(&self.metrics()) < 2 {
            assert!(Instant::now() < deadline, "the slow request never arrived");
            thread::sleep(Duration::from_millis(10));
        }
        conn
    }

    /// Polls until a new connection is refused, or panics after `timeout`.
    fn wait_refused(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            match TcpStream::connect_timeout(&self.addr, Duration::from_millis(500)) {
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => return,
                _ => {}
            }
            assert!(
                Instant::now() < deadline,
                "new connections were still accepted {timeout:?} after the signal"
            );
            thread::sleep(Duration::from_millis(20));
        }
    }
}

fn in_flight(metrics: &str) -> i64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix("http_requests_in_flight "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

const TALK_BODY: &str = r#"{"abra": 123, "kadabra": 4}"#;

#[test]
fn serves_the_api_over_http() {
    let app = App::start(&[("VERSION", "9.9.9-service")]);

    let r = app.http.get(app.url("/")).send().unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "text/plain; charset=utf-8");
    assert_eq!(r.text().unwrap(), "Hello world\n");

    let r = app
        .http
        .post(app.url("/"))
        .header("Content-Type", "application/json")
        .body(TALK_BODY)
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/json");
    assert_eq!(r.text().unwrap(), r#"{"abra":123}"#);

    let r = app.http.post(app.url("/")).body(TALK_BODY).send().unwrap();
    assert_eq!(r.status(), 415);
    let err: Value = serde_json::from_str(&r.text().unwrap()).unwrap();
    assert!(err["error"].as_str().unwrap().contains("application/json"));

    let r = app.http.get(app.url("/health")).send().unwrap();
    assert_eq!(r.status(), 200);
    let health: Value = serde_json::from_str(&r.text().unwrap()).unwrap();
    assert_eq!(
        health,
        serde_json::json!({"status": "up", "version": "9.9.9-service"})
    );

    let metrics = app.metrics();
    for line in [
        r#"http_requests_total{route="/",method="GET",status="200"} 1"#,
        r#"http_requests_total{route="/",method="POST",status="200"} 1"#,
        r#"http_requests_total{route="/",method="POST",status="415"} 1"#,
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "missing {line} in\n{metrics}"
        );
    }
    assert!(metrics
        .contains(r#"http_request_duration_seconds_bucket{route="/",method="POST",le="+Inf"} 2"#));

    // The log: a startup line with the address and version, then one JSON
    // line per request.
    let log = app.log();
    assert_eq!(log[0]["msg"], "listening");
    assert_eq!(log[0]["level"], "info");
    assert_eq!(log[0]["addr"], app.addr.to_string());
    assert_eq!(log[0]["version"], "9.9.9-service");
    let post = log
        .iter()
        .find(|l| l["msg"] == "request" && l["method"] == "POST" && l["status"] == 200)
        .expect("a request line for the POST");
    assert_eq!(post["path"], "/");
    assert!(post["duration_ms"].is_number());
    assert!(post["ts"].is_string());
}

#[test]
fn sigterm_lets_the_request_in_flight_finish_and_refuses_new_connections() {
    let mut app = App::start(&[]);
    let mut conn = app.start_slow_post(TALK_BODY, TALK_BODY.len() / 2);

    app.signal(libc::SIGTERM);
    // Shutdown has begun (the listener is closed) while the request is still open.
    app.wait_refused(Duration::from_secs(5));

    conn.write_all(&TALK_BODY.as_bytes()[TALK_BODY.len() / 2..])
        .unwrap();
    let mut response = String::new();
    conn.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{response}");
    assert!(response.ends_with("\r\n\r\n{\"abra\":123}"), "{response}");

    let status = app.wait_exit(Duration::from_secs(5));
    assert_eq!(status.code(), Some(0), "{status}");
    let messages = app.log_messages();
    assert!(
        messages.ends_with(&[
            "signal received".to_owned(),
            "shutting down".to_owned(),
            "request".to_owned(),
            "stopped".to_owned()
        ]),
        "{messages:?}"
    );
}

#[test]
fn sigint_on_an_idle_service_exits_0_at_once() {
    let mut app = App::start(&[]);
    // An idle keep-alive connection must not hold shutdown up.
    assert_eq!(app.http.get(app.url("/")).send().unwrap().status(), 200);
    app.signal(libc::SIGINT);
    let status = app.wait_exit(Duration::from_secs(3));
    assert_eq!(status.code(), Some(0), "{status}");
    assert_eq!(
        TcpStream::connect(app.addr).map_err(|e| e.kind()).err(),
        Some(std::io::ErrorKind::ConnectionRefused)
    );
    let log = app.log();
    assert!(log.iter().any(|l| l["signal"] == "SIGINT"), "{log:?}");
}

#[test]
fn the_grace_period_bounds_shutdown() {
    let mut app = App::start(&[("SHUTDOWN_GRACE_SECONDS", "1")]);
    // A client that never sends the rest of its body.
    let _stuck = app.start_slow_post(TALK_BODY, 5);
    let signalled = Instant::now();
    app.signal(libc::SIGTERM);
    let status = app.wait_exit(Duration::from_secs(5));
    let took = signalled.elapsed();
    assert_eq!(status.code(), Some(0), "{status}");
    assert!(
        took >= Duration::from_millis(900),
        "left after {took:?}, before the grace period"
    );
    let log = app.log();
    let last = log.last().unwrap();
    assert_eq!(last["level"], "warn", "{log:?}");
    assert_eq!(last["in_flight"], 1);
}

#[test]
fn batched_log_lines_stay_whole_and_none_are_lost() {
    let mut app = App::start(&[]);
    const CLIENTS: usize = 4;
    const REQUESTS: usize = 250;
    thread::scope(|s| {
        for _ in 0..CLIENTS {
            s.spawn(|| {
                for _ in 0..REQUESTS {
                    let r = app.http.get(app.url("/?load")).send().unwrap();
                    assert_eq!(r.status(), 200);
                }
            });
        }
    });
    app.signal(libc::SIGTERM);
    assert_eq!(app.wait_exit(Duration::from_secs(5)).code(), Some(0));
    // Every line parses as JSON (App::log panics otherwise), and each
    // request has exactly one.
    let log = app.log();
    let load = log
        .iter()
        .filter(|l| l["msg"] == "request" && l["path"] == "/")
        .count();
    assert_eq!(load, CLIENTS * REQUESTS);
    assert_eq!(log.last().unwrap()["msg"], "stopped");
}

#[test]
fn the_startup_line_is_written_even_at_level_error() {
    let app = App::start(&[("LOG_LEVEL", "ERROR")]);
    assert_eq!(app.http.get(app.url("/")).send().unwrap().status(), 200);
    let log = app.log();
    assert_eq!(log.len(), 1, "{log:?}");
    assert_eq!(log[0]["msg"], "listening");
    assert_eq!(log[0]["addr"], app.addr.to_string());
}

#[test]
fn invalid_configuration_is_a_clear_error_and_a_non_zero_exit() {
    for (var, value) in [
        ("PORT", "eighty"),
        ("LOG_LEVEL", "chatty"),
        ("BIND_ADDR", "everywhere"),
    ] {
        let out = Command::new(BIN)
            .env_clear()
            .env(var, value)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{var}={value}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(&format!("invalid {var}=\"{value}\"")),
            "{var}: {stderr}"
        );
        assert!(!stderr.contains("panicked"), "{stderr}");
        assert!(out.stdout.is_empty());
    }
}
