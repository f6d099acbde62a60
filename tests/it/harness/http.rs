//! The tests' one HTTP/1.1 client, over loopback: a request on a connection of its own, or on a
//! kept-alive one, and the load generator built on it. It counts the outcome of every request
//! it sends and never hides a reconnect: a load test must see each failure the route lets
//! through, so nothing here retries.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// One GET on a connection of its own: (status, body).
pub fn get(port: u16, path: &str) -> std::io::Result<(u16, String)> {
    let answer = Request::get(path).send(port)?;
    Ok((answer.status, answer.body))
}

/// One POST with an empty body, on a connection of its own (the route never sends a POST
/// twice): its status; panics if there is no answer.
pub fn post(port: u16, path: &str) -> u16 {
    Request::post(path)
        .timeout(Duration::from_secs(10))
        .send(port)
        .unwrap_or_else(|err| panic!("POST {path} on port {port}: no HTTP answer: {err}"))
        .status
}

/// A request to send to a port of 127.0.0.1.
pub struct Request {
    method: String,
    path: String,
    content_type: Option<String>,
    body: String,
    timeout: Duration,
}

/// What a server answered.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub body: String,
}

impl Request {
    pub fn new(method: &str, path: &str) -> Request {
        Request {
            method: method.to_string(),
            path: path.to_string(),
            content_type: None,
            body: String::new(),
            // Long enough for a request that waits for a restarted instance on a busy machine.
            timeout: Duration::from_secs(30),
        }
    }

    pub fn get(path: &str) -> Request {
        Request::new("GET", path)
    }

    pub fn post(path: &str) -> Request {
        Request::new("POST", path)
    }

    /// `body`, sent with `Content-Type: content_type`.
    pub fn body(mut self, content_type: &str, body: &str) -> Request {
        self.content_type = Some(content_type.to_string());
        self.body = body.to_string();
        self
    }

    pub fn json(self, body: &str) -> Request {
        self.body("application/json", body)
    }

    /// How long to wait for each read of the answer (30 s unless told).
    pub fn timeout(mut self, timeout: Duration) -> Request {
        self.timeout = timeout;
        self
    }

    /// Sends the request on a connection of its own, closed after the answer.
    pub fn send(&self, port: u16) -> std::io::Result<Answer> {
        Connection::default().send(port, self, false)
    }
}

/// A connection that may be kept alive from one request to the next.
#[derive(Default)]
pub struct Connection(Option<BufReader<TcpStream>>);

impl Connection {
    pub fn is_open(&self) -> bool {
        self.0.is_some()
    }

    /// Sends `request` on this connection (opening one if there is none) and reads the answer.
    /// The connection is kept for the next request when `keep_alive` and the server allows it;
    /// after an error it is closed.
    pub fn send(
        &mut self,
        port: u16,
        request: &Request,
        keep_alive: bool,
    ) -> std::io::Result<Answer> {
        match self.exchange(port, request, keep_alive) {
            Ok((answer, server_closes)) => {
                if !keep_alive || server_closes {
                    self.0 = None;
                }
                Ok(answer)
            }
            Err(err) => {
                self.0 = None;
                Err(err)
            }
        }
    }

    /// The answer, and whether the server closes the connection after it.
    fn exchange(
        &mut self,
        port: u16,
        request: &Request,
        keep_alive: bool,
    ) -> std::io::Result<(Answer, bool)> {
        if self.0.is_none() {
            let stream = TcpStream::connect(("127.0.0.1", port))?;
            stream.set_nodelay(true)?;
            self.0 = Some(BufReader::new(stream));
        }
        let reader = self.0.as_mut().unwrap();
        reader.get_mut().set_read_timeout(Some(request.timeout))?;
        let mut head = format!(
            "{} {} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n",
            request.method, request.path
        );
        if !keep_alive {
            head.push_str("Connection: close\r\n");
        }
        if let Some(content_type) = &request.content_type {
            head.push_str(&format!("Content-Type: {content_type}\r\n"));
        }
        if request.method != "GET" || !request.body.is_empty() {
            head.push_str(&format!("Content-Length: {}\r\n", request.body.len()));
        }
        write!(reader.get_mut(), "{head}\r\n{}", request.body)?;

        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the connection closed before an answer",
            ));
        }
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| std::io::Error::other(format!("not a status line: {line:?}")))?;
        let mut length = None;
        let mut chunked = false;
        let mut server_closes = false;
        loop {
            line.clear();
            if reader.read_line(&mut line)? == 0 {
                return Err(std::io::Error::other(
                    "the connection closed in the headers",
                ));
            }
            let header = line.trim_end();
            if header.is_empty() {
                break;
            }
            let (name, value) = header.split_once(':').unwrap_or((header, ""));
            let value = value.trim();
            if name.eq_ignore_ascii_case("content-length") {
                length = value.parse::<usize>().ok();
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                chunked = value.eq_ignore_ascii_case("chunked");
            } else if name.eq_ignore_ascii_case("connection") {
                server_closes = value.eq_ignore_ascii_case("close");
            }
        }
        let body = match (length, chunked) {
            (Some(length), false) => {
                let mut body = vec![0; length];
                reader.read_exact(&mut body)?;
                body
            }
            (_, true) => read_chunks(reader)?,
            // No length: the body ends where the server closes the connection.
            (None, false) => {
                server_closes = true;
                let mut body = Vec::new();
                reader.read_to_end(&mut body)?;
                body
            }
        };
        let answer = Answer {
            status,
            body: String::from_utf8_lossy(&body).into_owned(),
        };
        Ok((answer, server_closes))
    }
}

/// A chunked body, up to its last (empty) chunk and the empty line after its trailers.
fn read_chunks(reader: &mut BufReader<TcpStream>) -> std::io::Result<Vec<u8>> {
    let mut body = Vec::new();
    let mut line = String::new();
    loop {
        line.clear();
        reader.read_line(&mut line)?;
        let size = line.trim_end().split(';').next().unwrap_or("");
        let size = usize::from_str_radix(size.trim(), 16)
            .map_err(|_| std::io::Error::other(format!("not a chunk size: {line:?}")))?;
        if size == 0 {
            loop {
                line.clear();
                if reader.read_line(&mut line)? == 0 || line.trim_end().is_empty() {
                    return Ok(body);
                }
            }
        }
        let start = body.len();
        body.resize(start + size, 0);
        reader.read_exact(&mut body[start..])?;
        let mut end = [0u8; 2];
        reader.read_exact(&mut end)?;
    }
}

/// What the clients of a load saw.
#[derive(Debug, Default)]
pub struct Tally {
    pub sent: usize,
    pub ok: usize,
    pub failures: Vec<String>,
    /// A client that got an older version after a newer one.
    pub regressions: Vec<String>,
    pub versions: BTreeMap<String, usize>,
    pub slow: usize,
    pub keep_alive_reconnects: usize,
}

/// Clients sending GETs at a route until told to stop (64 of them make a busy route): half of
/// them on keep-alive connections, half with `Connection: close`; every `slow_every`-th request
/// of each is `/slow?ms=300`, the others `/`. The answers are versions (as the test apps give
/// them), which each client expects never to go back.
pub struct Load {
    stop: Arc<AtomicBool>,
    clients: Vec<std::thread::JoinHandle<Tally>>,
    started: Instant,
}

impl Load {
    pub fn start(port: u16, clients: usize, slow_every: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let clients = (0..clients)
            .map(|i| {
                let stop = Arc::clone(&stop);
                let keep_alive = i % 2 == 0;
                std::thread::spawn(move || client(port, keep_alive, slow_every, i, &stop))
            })
            .collect();
        Load {
            stop,
            clients,
            started: Instant::now(),
        }
    }

    /// Stops the clients: what they saw together, and how long they ran.
    pub fn finish(self) -> (Tally, Duration) {
        self.stop.store(true, Ordering::SeqCst);
        let mut total = Tally::default();
        for client in self.clients {
            let tally = client.join().unwrap();
            total.sent += tally.sent;
            total.ok += tally.ok;
            total.slow += tally.slow;
            total.keep_alive_reconnects += tally.keep_alive_reconnects;
            total.failures.extend(tally.failures);
            total.regressions.extend(tally.regressions);
            for (version, n) in tally.versions {
                *total.versions.entry(version).or_default() += n;
            }
        }
        (total, self.started.elapsed())
    }
}

fn client(port: u16, keep_alive: bool, slow_every: usize, id: usize, stop: &AtomicBool) -> Tally {
    let mut tally = Tally::default();
    let mut connection = Connection::default();
    let mut newest: Option<Vec<u64>> = None;
    let mut n = id; // So that the clients' slow requests do not all come at once.
    while !stop.load(Ordering::SeqCst) {
        n += 1;
        let path = if n % slow_every == 0 {
            "/slow?ms=300"
        } else {
            "/"
        };
        let had_connection = connection.is_open();
        tally.sent += 1;
        match connection.send(port, &Request::get(path), keep_alive) {
            Ok(Answer { status: 200, body }) => {
                tally.ok += 1;
                if path != "/" {
                    tally.slow += 1;
                }
                let version = body.trim().trim_start_matches("slow ").to_string();
                let order = version_order(&version);
                if let Some(newest) = &newest {
                    if order < *newest {
                        tally
                            .regressions
                            .push(format!("client {id} got {version} after {newest:?}"));
                    }
                }
                if newest.as_ref().is_none_or(|newest| order > *newest) {
                    newest = Some(order);
                }
                *tally.versions.entry(version).or_default() += 1;
            }
            Ok(Answer { status, body }) => tally
                .failures
                .push(format!("client {id} {path}: {status} {}", body.trim())),
            Err(err) => tally.failures.push(format!("client {id} {path}: {err}")),
        }
        if keep_alive && had_connection && !connection.is_open() {
            tally.keep_alive_reconnects += 1;
        }
    }
    tally
}

fn version_order(version: &str) -> Vec<u64> {
    version
        .split('.')
        .map(|part| part.parse().unwrap_or(0))
        .collect()
}

/// Every request of a load was answered 200, and no client saw a version older than one it
/// had seen.
#[track_caller]
pub fn assert_all_answered(tally: &Tally, what: &str) {
    assert!(
        tally.failures.is_empty(),
        "{what}: {} of {} requests failed, e.g. {:?}",
        tally.failures.len(),
        tally.sent,
        &tally.failures[..tally.failures.len().min(10)]
    );
    assert_eq!(
        tally.sent, tally.ok,
        "{what}: every request sent is answered 200"
    );
    assert!(
        tally.regressions.is_empty(),
        "{what}: once a client saw a version, it never sees an older one: {:?}",
        &tally.regressions[..tally.regressions.len().min(10)]
    );
}

/// A server on 127.0.0.1 for the client's own tests: on the one connection it accepts, it
/// reads a request head and writes the next of `answers`, for each of them, then closes.
fn serve(answers: Vec<&'static str>) -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        let mut reader = BufReader::new(stream);
        for answer in answers {
            let mut line = String::new();
            while reader.read_line(&mut line).unwrap() > 0 && !line.ends_with("\r\n\r\n") {}
            reader.get_mut().write_all(answer.as_bytes()).unwrap();
        }
    });
    port
}

#[test]
fn the_client_reads_bodies_by_length_by_chunks_and_until_close() {
    let answers = [
        (
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
            200,
            "hello",
        ),
        (
            "HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6;x=y\r\n \
             world\r\n0\r\n\r\n",
            201,
            "hello world",
        ),
        (
            "HTTP/1.0 404 Not Found\r\n\r\nto the end",
            404,
            "to the end",
        ),
    ];
    for (answer, status, body) in answers {
        let port = serve(vec![answer]);
        assert_eq!(
            get(port, "/").unwrap(),
            (status, body.to_string()),
            "{answer:?}"
        );
    }
}

#[test]
fn a_kept_alive_connection_serves_requests_until_the_server_closes_it() {
    let port = serve(vec![
        "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\na",
        "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nConnection: close\r\n\r\nb",
    ]);
    let mut connection = Connection::default();
    let first = connection.send(port, &Request::get("/"), true).unwrap();
    assert_eq!((first.status, first.body.as_str()), (200, "a"));
    assert!(connection.is_open());
    let second = connection.send(port, &Request::get("/"), true).unwrap();
    assert_eq!((second.status, second.body.as_str()), (200, "b"));
    assert!(!connection.is_open(), "the server said it closes");
    let refused = connection.send(port, &Request::get("/"), true);
    assert!(refused.is_err(), "the server takes no second connection");
}
