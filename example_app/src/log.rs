//! Structured logging: one JSON object per line on stdout, filtered by level, written cheaply.
//!
//! Hand-written rather than a tracing subscriber because the request line is
//! on the hot path. Each thread formats lines straight into its own buffer
//! (no allocation, no shared lock). Threads that are not runtime workers
//! write each line at once. Runtime workers batch: their buffer goes out in
//! one write when it fills up or when the worker runs out of work and parks
//! (`on_worker_park`, hooked into the runtime by main), so under load many
//! lines share one syscall, and when idle a line waits no longer than the
//! request that produced it. Lifecycle lines (`event`) first flush every
//! thread's buffer, so "stopped" always comes after the requests before it.

use std::cell::Cell;
use std::fmt;
use std::io::Write;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Log levels, most severe first, so `a <= b` means "a is shown when b is the threshold".
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Error,
    Warn,
    Info,
    Debug,
}

impl Level {
    /// Parses a `LOG_LEVEL` value in any case; `warning` is accepted for `warn`.
    pub fn parse(s: &str) -> Option<Level> {
        match s.trim().to_ascii_lowercase().as_str() {
            "error" => Some(Level::Error),
            "warn" | "warning" => Some(Level::Warn),
            "info" => Some(Level::Info),
            "debug" => Some(Level::Debug),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Level::Error => "error",
            Level::Warn => "warn",
            Level::Info => "info",
            Level::Debug => "debug",
        }
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A field value: strings are quoted and escaped, numbers are not.
#[derive(Clone, Copy, Debug)]
pub enum Value<'a> {
    Str(&'a str),
    Num(u64),
}

#[derive(Clone, Debug)]
enum Sink {
    Stdout,
    /// Collects lines in memory so unit tests can read what would have been logged.
    Memory(Arc<Mutex<Vec<u8>>>),
}

/// Cheap to clone: a level and where lines go.
#[derive(Clone, Debug)]
pub struct Logger {
    level: Level,
    sink: Sink,
}

/// A worker's buffer is written out once it holds this much.
const FLUSH_AT: usize = 16 * 1024;

/// One thread's output buffer. The mutex is only ever contended by `flush`,
/// which is rare (lifecycle lines, exit); on the hot path it is one
/// uncontended atomic, not a lock shared between threads.
type Buffer = Arc<Mutex<Vec<u8>>>;

/// Every thread's buffer, so `flush` can reach them all. Locked only when a
/// thread logs for the first time and by `flush`.
static BUFFERS: Mutex<Vec<Weak<Mutex<Vec<u8>>>>> = Mutex::new(Vec::new());

struct Local {
    buffer: Buffer,
    /// Set once this thread has parked as a runtime worker: from then on its
    /// lines are batched, because the park hook will write them out.
    batching: Cell<bool>,
}

impl Local {
    fn new() -> Local {
        let buffer = Buffer::new(Mutex::new(Vec::with_capacity(FLUSH_AT + 1024)));
        let mut all = lock(&BUFFERS);
        all.retain(|b| b.strong_count() > 0);
        all.push(Arc::downgrade(&buffer));
        Local {
            buffer,
            batching: Cell::new(false),
        }
    }
}

impl Drop for Local {
    /// A thread that exits writes what it still holds.
    fn drop(&mut self) {
        write_out(&mut lock(&self.buffer));
    }
}

thread_local! {
    static LOCAL: Local = Local::new();
}

/// A poisoned lock only means another thread panicked mid-log; the bytes are still fine.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Writes `buf` to stdout with one write(2) (stdout is line buffered and
/// `buf` ends with a newline) and empties it. Errors, such as a closed pipe,
/// are ignored: losing log lines must not take the service down (println!
/// would panic).
fn write_out(buf: &mut Vec<u8>) {
    if buf.is_empty() {
        return;
    }
    let _ = std::io::stdout().lock().write_all(buf);
    buf.clear();
    // Do not keep a huge buffer around because one path was huge.
    if buf.capacity() > 4 * FLUSH_AT {
        *buf = Vec::with_capacity(FLUSH_AT + 1024);
    }
}

/// For the runtime's `on_thread_park` hook: this thread is a worker with no
/// work left, so write out its lines now and batch from here on.
pub fn on_worker_park() {
    let _ = LOCAL.try_with(|local| {
        local.batching.set(true);
        write_out(&mut lock(&local.buffer));
    });
}

/// Writes out every thread's buffered lines.
pub fn flush() {
    let all: Vec<Buffer> = lock(&BUFFERS).iter().filter_map(Weak::upgrade).collect();
    for buffer in all {
        write_out(&mut lock(&buffer));
    }
}

impl Logger {
    pub fn stdout(level: Level) -> Logger {
        Logger {
            level,
            sink: Sink::Stdout,
        }
    }

    /// A logger whose lines land in the returned buffer instead of stdout.
    pub fn memory(level: Level) -> (Logger, Arc<Mutex<Vec<u8>>>) {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let logger = Logger {
            level,
            sink: Sink::Memory(buf.clone()),
        };
        (logger, buf)
    }

    pub fn level(&self) -> Level {
        self.level
    }

    pub fn enabled(&self, level: Level) -> bool {
        level <= self.level
    }

    /// Logs `msg` with extra fields when `level` is enabled.
    pub fn event(&self, level: Level, msg: &str, fields: &[(&str, Value<'_>)]) {
        if self.enabled(level) {
            self.announce(level, msg, fields);
        }
    }

    /// Logs `msg` whatever the threshold. Only for the startup line: the
    /// platform and cdflow's tests read it to know the app is up, and must
    /// see it even when LOG_LEVEL is error.
    pub fn announce(&self, level: Level, msg: &str, fields: &[(&str, Value<'_>)]) {
        // Rare lines: bring every batched line out first, then this one at once.
        if let Sink::Stdout = self.sink {
            flush();
        }
        self.write_line(level, false, |buf| {
            push_field(buf, "msg", Value::Str(msg));
            for (key, value) in fields {
                push_field(buf, key, *value);
            }
        });
    }

    /// The per-request line, at info.
    pub fn request(&self, method: &str, path: &str, status: u16, duration: Duration) {
        if !self.enabled(Level::Info) {
            return;
        }
        self.write_line(Level::Info, true, |buf| {
            // The keys are constants: written as they are, not escaped.
            buf.extend_from_slice(b",\"msg\":\"request\",\"method\":\"");
            push_escaped(buf, method);
            buf.extend_from_slice(b"\",\"path\":\"");
            push_escaped(buf, path);
            buf.extend_from_slice(b"\",\"status\":");
            push_uint(buf, u64::from(status));
            // Milliseconds with microsecond precision, written from integers
            // so no float formatting is needed.
            let micros = u64::try_from(duration.as_micros()).unwrap_or(u64::MAX);
            buf.extend_from_slice(b",\"duration_ms\":");
            push_uint(buf, micros / 1000);
            buf.push(b'.');
            push_padded(buf, micros % 1000, 3);
        });
    }

    /// Formats one line and sends it to the sink; `may_batch` lets a worker
    /// thread keep it buffered until its next flush.
    fn write_line(&self, level: Level, may_batch: bool, fields: impl FnOnce(&mut Vec<u8>)) {
        let format = |buf: &mut Vec<u8>| {
            buf.extend_from_slice(b"{\"ts\":\"");
            push_timestamp(buf, SystemTime::now());
            buf.extend_from_slice(b"\",\"level\":\"");
            buf.extend_from_slice(level.as_str().as_bytes());
            buf.push(b'"');
            fields(buf);
            buf.extend_from_slice(b"}\n");
        };
        match &self.sink {
            Sink::Stdout => {
                let mut format = Some(format);
                let _ = LOCAL.try_with(|local| {
                    let mut buf = lock(&local.buffer);
                    if let Some(format) = format.take() {
                        format(&mut buf);
                    }
                    if !(may_batch && local.batching.get()) || buf.len() >= FLUSH_AT {
                        write_out(&mut buf);
                    }
                });
                // This thread is being torn down: write the line directly.
                if let Some(format) = format {
                    let mut buf = Vec::with_capacity(256);
                    format(&mut buf);
                    write_out(&mut buf);
                }
            }
            Sink::Memory(mem) => format(&mut lock(mem)),
        }
    }
}

fn push_field(buf: &mut Vec<u8>, key: &str, value: Value<'_>) {
    buf.extend_from_slice(b",\"");
    push_escaped(buf, key);
    buf.extend_from_slice(b"\":");
    match value {
        Value::Str(s) => {
            buf.push(b'"');
            push_escaped(buf, s);
            buf.push(b'"');
        }
        Value::Num(n) => push_uint(buf, n),
    }
}

/// Appends `s` as the inside of a JSON string. Request paths come from
/// clients, so quotes, backslashes and control characters must not be able to
/// break the line.
fn push_escaped(buf: &mut Vec<u8>, s: &str) {
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escape: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0..=0x1f | 0x7f => {
                buf.extend_from_slice(&bytes[start..i]);
                let _ = write!(buf, "\\u{:04x}", b);
                start = i + 1;
                continue;
            }
            _ => continue,
        };
        buf.extend_from_slice(&bytes[start..i]);
        buf.extend_from_slice(escape);
        start = i + 1;
    }
    buf.extend_from_slice(&bytes[start..]);
}

/// RFC 3339 UTC with milliseconds, e.g. `2025-11-25T19:53:00.123Z`.
/// It is on every request line, so each thread keeps the text of the current
/// second and only writes the milliseconds anew.
fn push_timestamp(buf: &mut Vec<u8>, now: SystemTime) {
    let since = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let cached = SECOND.try_with(|cell| {
        let (at, text) = cell.get();
        if at == Some(secs) {
            return text;
        }
        let text = second_text(secs);
        cell.set((Some(secs), text));
        text
    });
    let text = cached.unwrap_or_else(|_| second_text(secs));
    buf.extend_from_slice(&text);
    buf.push(b'.');
    push_padded(buf, u64::from(since.subsec_millis()), 3);
    buf.push(b'Z');
}

thread_local! {
    /// The second `push_timestamp` last wrote on this thread, and its text.
    static SECOND: Cell<(Option<u64>, [u8; 19])> = const { Cell::new((None, [0; 19])) };
}

/// `YYYY-MM-DDTHH:MM:SS` for `secs` since the epoch (years past 9999 are
/// written as 9999: not a concern for a clock this program reads).
fn second_text(secs: u64) -> [u8; 19] {
    let (year, month, day) = civil_from_days((secs / 86_400) as i64);
    let rem = secs % 86_400;
    let mut v = Vec::with_capacity(19);
    push_padded(&mut v, year.clamp(0, 9999) as u64, 4);
    v.push(b'-');
    push_padded(&mut v, u64::from(month), 2);
    v.push(b'-');
    push_padded(&mut v, u64::from(day), 2);
    v.push(b'T');
    push_padded(&mut v, rem / 3600, 2);
    v.push(b':');
    push_padded(&mut v, rem / 60 % 60, 2);
    v.push(b':');
    push_padded(&mut v, rem % 60, 2);
    let mut text = [0u8; 19];
    text.copy_from_slice(&v);
    text
}

/// Appends `n` in decimal.
fn push_uint(buf: &mut Vec<u8>, n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    let mut n = n;
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    buf.extend_from_slice(&digits[i..]);
}

/// Appends `n` in decimal with leading zeros to at least `width` digits.
fn push_padded(buf: &mut Vec<u8>, n: u64, width: usize) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    let mut n = n;
    while i > digits.len() - width || n > 0 {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
    }
    buf.extend_from_slice(&digits[i..]);
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian
/// calendar (Howard Hinnant's algorithm), to avoid a date crate for one line.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // day of era, 0..=146096
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(buf: &Arc<Mutex<Vec<u8>>>) -> Vec<serde_json::Value> {
        let text = String::from_utf8(buf.lock().unwrap().clone()).unwrap();
        text.lines()
            .map(|l| serde_json::from_str(l).expect("each line is JSON"))
            .collect()
    }

    #[test]
    fn levels_parse_in_any_case() {
        assert_eq!(Level::parse("INFO"), Some(Level::Info));
        assert_eq!(Level::parse("Warn"), Some(Level::Warn));
        assert_eq!(Level::parse("warning"), Some(Level::Warn));
        assert_eq!(Level::parse("debug"), Some(Level::Debug));
        assert_eq!(Level::parse("ERROR"), Some(Level::Error));
        assert_eq!(Level::parse("trace"), None);
    }

    #[test]
    fn request_line_has_the_documented_fields() {
        let (logger, buf) = Logger::memory(Level::Info);
        logger.request("GET", "/", 200, Duration::from_micros(1234));
        let lines = lines(&buf);
        assert_eq!(lines.len(), 1);
        let l = &lines[0];
        assert_eq!(l["level"], "info");
        assert_eq!(l["msg"], "request");
        assert_eq!(l["method"], "GET");
        assert_eq!(l["path"], "/");
        assert_eq!(l["status"], 200);
        assert_eq!(l["duration_ms"].as_f64(), Some(1.234));
        let ts = l["ts"].as_str().unwrap();
        assert_eq!(ts.len(), "2025-11-25T19:53:00.123Z".len(), "{ts}");
        assert!(ts.ends_with('Z'));
    }

    #[test]
    fn level_filters_lines() {
        let (logger, buf) = Logger::memory(Level::Warn);
        logger.request("GET", "/", 200, Duration::ZERO);
        logger.event(Level::Info, "hidden", &[]);
        logger.event(Level::Warn, "shown", &[("n", Value::Num(1))]);
        logger.announce(Level::Info, "listening", &[]);
        let lines = lines(&buf);
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["msg"], "shown");
        assert_eq!(lines[0]["level"], "warn");
        assert_eq!(lines[0]["n"], 1);
        assert_eq!(lines[1]["msg"], "listening");
        assert_eq!(lines[1]["level"], "info");
    }

    #[test]
    fn hostile_strings_stay_inside_their_field() {
        let (logger, buf) = Logger::memory(Level::Debug);
        let path = "/a\"b\\c\nd\u{1}e\u{7f}é";
        logger.request("GET", path, 404, Duration::ZERO);
        let lines = lines(&buf);
        assert_eq!(lines.len(), 1);
        assert_eq!(lines[0]["path"], path);
    }

    #[test]
    fn numbers_are_written_in_decimal() {
        let num = |n: u64| {
            let mut buf = Vec::new();
            push_uint(&mut buf, n);
            String::from_utf8(buf).unwrap()
        };
        assert_eq!(num(0), "0");
        assert_eq!(num(7), "7");
        assert_eq!(num(1_000), "1000");
        assert_eq!(num(u64::MAX), u64::MAX.to_string());
        let padded = |n: u64, width: usize| {
            let mut buf = Vec::new();
            push_padded(&mut buf, n, width);
            String::from_utf8(buf).unwrap()
        };
        assert_eq!(padded(0, 3), "000");
        assert_eq!(padded(5, 3), "005");
        assert_eq!(padded(999, 3), "999");
        assert_eq!(padded(12_345, 3), "12345");
        assert_eq!(padded(2025, 4), "2025");
    }

    #[test]
    fn duration_is_milliseconds_with_three_decimals() {
        let (logger, buf) = Logger::memory(Level::Info);
        logger.request("GET", "/", 200, Duration::from_micros(5));
        logger.request("GET", "/", 200, Duration::from_micros(61_020));
        let text = String::from_utf8(buf.lock().unwrap().clone()).unwrap();
        assert!(text.contains("\"duration_ms\":0.005}"), "{text}");
        assert!(text.contains("\"duration_ms\":61.020}"), "{text}");
    }

    /// The timestamp written for `secs` and `millis` after the epoch.
    fn at(secs: u64, millis: u64) -> String {
        let mut buf = Vec::new();
        push_timestamp(
            &mut buf,
            UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_millis(millis),
        );
        String::from_utf8(buf).unwrap()
    }

    #[test]
    fn timestamp_cache_follows_the_clock() {
        assert_eq!(at(59, 1), "1970-01-01T00:00:59.001Z");
        assert_eq!(at(59, 999), "1970-01-01T00:00:59.999Z");
        assert_eq!(at(60, 0), "1970-01-01T00:01:00.000Z");
        assert_eq!(at(59, 2), "1970-01-01T00:00:59.002Z");
    }

    #[test]
    fn timestamps_are_utc_calendar_dates() {
        assert_eq!(at(0, 0), "1970-01-01T00:00:00.000Z");
        assert_eq!(at(951_782_400, 5), "2000-02-29T00:00:00.005Z");
        assert_eq!(at(1_764_100_380, 123), "2025-11-25T19:53:00.123Z");
        assert_eq!(at(4_107_542_399, 999), "2100-02-28T23:59:59.999Z");
    }
}
