//! An environment's log: every instance's output and the platform's events, one timestamped
//! line each, in Cloud Foundry's manner:
//!
//! ```text
//! 2026-11-25T20:10:02.123Z [APP/0] OUT listening on 41234
//! 2026-11-25T20:10:02.180Z [HEALTH/0] healthy after 0.06s: GET /health answered 200 OK
//! 2026-11-25T20:10:02.181Z [API] route http://127.0.0.1:8081 switched to 1.2.3
//! ```
//!
//! The server is the only writer (one task owns the file); `cdflow logs` reads the file. At
//! [`ROTATE_BYTES`] the file moves to `app.log.1`, so the logs of an environment stay bounded.

use std::io::{BufRead, Read, Seek, SeekFrom, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use tokio::sync::mpsc;

use super::layout::EnvPaths;
use crate::ui::Ui;

pub const ROTATE_BYTES: u64 = 16 * 1024 * 1024;

/// The longest line kept; the rest of a longer one is cut.
pub const MAX_LINE: usize = 16 * 1024;

struct Line {
    source: Arc<str>,
    stream: &'static str,
    text: String,
}

/// Where the server's tasks send lines. Cloning is cheap.
#[derive(Clone)]
pub struct LogSink {
    tx: mpsc::UnboundedSender<Line>,
}

impl LogSink {
    /// Starts the writer task (on the current tokio runtime).
    pub fn open(paths: &EnvPaths) -> Result<LogSink> {
        let path = paths.log();
        let old = paths.old_log();
        let file = open_append(&path)?;
        let size = file.metadata().map(|m| m.len()).unwrap_or(0);
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(write_lines(rx, path, old, file, size));
        Ok(LogSink { tx })
    }

    /// A line of an instance's output (`stream` is `OUT` or `ERR`).
    pub fn output(&self, source: &Arc<str>, stream: &'static str, text: String) {
        let _ = self.tx.send(Line {
            source: Arc::clone(source),
            stream,
            text,
        });
    }

    /// A platform event, such as `[API]` or `[CELL/0]`.
    pub fn event(&self, source: &str, text: impl Into<String>) {
        let _ = self.tx.send(Line {
            source: source.into(),
            stream: "",
            text: text.into(),
        });
    }
}

fn open_append(path: &PathBuf) -> Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("could not open the log {}", path.display()))
}

async fn write_lines(
    mut rx: mpsc::UnboundedReceiver<Line>,
    path: PathBuf,
    old: PathBuf,
    file: std::fs::File,
    mut size: u64,
) {
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, file);
    let mut formatted = String::new();
    // Apps that log every request write many lines a millisecond: format each millisecond once.
    let mut stamp = (i64::MIN, String::new());
    while let Some(line) = rx.recv().await {
        let mut next = Some(line);
        // Everything already queued goes out in one write.
        while let Some(line) = next {
            let millis = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64);
            if millis != stamp.0 {
                stamp = (millis, super::time::format_millis(millis));
            }
            formatted.clear();
            formatted.push_str(&stamp.1);
            formatted.push_str(" [");
            formatted.push_str(&line.source);
            formatted.push(']');
            if !line.stream.is_empty() {
                formatted.push(' ');
                formatted.push_str(line.stream);
            }
            formatted.push(' ');
            formatted.push_str(&line.text);
            formatted.push('\n');
            let _ = out.write_all(formatted.as_bytes());
            size += formatted.len() as u64;
            next = rx.try_recv().ok();
        }
        let _ = out.flush();
        if size >= ROTATE_BYTES {
            let _ = std::fs::rename(&path, &old);
            if let Ok(file) = open_append(&path) {
                out = std::io::BufWriter::with_capacity(64 * 1024, file);
                size = 0;
            }
        }
    }
    let _ = out.flush();
}

/// The last `n` lines of the environment's log (reaching into the rotated file if needed).
pub fn tail(paths: &EnvPaths, n: usize) -> Vec<String> {
    let mut lines = read_lines(&paths.log());
    if lines.len() < n {
        let mut older = read_lines(&paths.old_log());
        older.append(&mut lines);
        lines = older;
    }
    let start = lines.len().saturating_sub(n);
    lines.split_off(start)
}

fn read_lines(path: &PathBuf) -> Vec<String> {
    match std::fs::read(path) {
        Ok(bytes) => String::from_utf8_lossy(&bytes)
            .lines()
            .map(str::to_string)
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// How many lines `cdflow logs` shows before following.
pub const RECENT: usize = 200;

/// `cdflow logs`: the recent lines, then (with `follow`) new ones as they come, until
/// interrupted.
pub fn show(ui: &Ui, paths: &EnvPaths, follow: bool) -> Result<()> {
    for line in tail(paths, RECENT) {
        ui.note(&line);
    }
    if !follow {
        return Ok(());
    }
    let path = paths.log();
    let mut offset = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    let mut pending = Vec::new();
    loop {
        if crate::signals::stop_requested() {
            return Ok(());
        }
        let len = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        if len < offset {
            // Rotated: the new file starts from nothing.
            offset = 0;
        }
        if len > offset {
            let mut file = std::fs::File::open(&path)?;
            file.seek(SeekFrom::Start(offset))?;
            let mut chunk = Vec::new();
            file.take(len - offset).read_to_end(&mut chunk)?;
            offset = len;
            pending.extend_from_slice(&chunk);
            let mut reader = std::io::Cursor::new(std::mem::take(&mut pending));
            let mut line = Vec::new();
            loop {
                line.clear();
                if reader.read_until(b'\n', &mut line)? == 0 {
                    break;
                }
                if line.ends_with(b"\n") {
                    ui.note(String::from_utf8_lossy(&line).trim_end_matches('\n'));
                } else {
                    // Half a line: keep it for the next round.
                    pending = line.clone();
                }
            }
        }
        std::thread::sleep(Duration::from_millis(150));
    }
}
