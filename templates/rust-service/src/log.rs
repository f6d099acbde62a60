//! Logs as one JSON object a line on stdout, where the platform collects them.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Error,
    Warn,
    Info,
    Debug,
}

impl Level {
    pub fn parse(text: &str) -> Option<Level> {
        match text.trim().to_ascii_lowercase().as_str() {
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

/// Cheap to clone: a threshold and where lines go.
#[derive(Clone, Debug)]
pub struct Logger {
    level: Level,
    /// `None`: stdout. `Some`: kept in memory, for tests.
    memory: Option<Arc<Mutex<Vec<String>>>>,
}

impl Logger {
    pub fn stdout(level: Level) -> Logger {
        Logger {
            level,
            memory: None,
        }
    }

    /// A logger whose lines land in the returned buffer.
    pub fn memory(level: Level) -> (Logger, Arc<Mutex<Vec<String>>>) {
        let lines = Arc::new(Mutex::new(Vec::new()));
        let logger = Logger {
            level,
            memory: Some(lines.clone()),
        };
        (logger, lines)
    }

    pub fn enabled(&self, level: Level) -> bool {
        level <= self.level
    }

    /// Logs `msg` with `fields` (a JSON object) when `level` is enabled.
    pub fn log(&self, level: Level, msg: &str, fields: Value) {
        if !self.enabled(level) {
            return;
        }
        let mut line = Map::new();
        line.insert("ts".into(), Value::String(timestamp(SystemTime::now())));
        line.insert("level".into(), level.as_str().into());
        line.insert("msg".into(), msg.into());
        if let Value::Object(fields) = fields {
            line.extend(fields);
        }
        let line = Value::Object(line).to_string();
        match &self.memory {
            Some(lines) => lines.lock().unwrap_or_else(|e| e.into_inner()).push(line),
            // One write a line; a closed stdout must not take the service down.
            None => {
                let _ = writeln!(std::io::stdout().lock(), "{line}");
            }
        }
    }
}

/// RFC 3339 in UTC with milliseconds, such as `2025-11-25T19:53:00.123Z`.
pub fn timestamp(now: SystemTime) -> String {
    let since = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    // Days to a civil date (Howard Hinnant's algorithm), to avoid a date crate for one field.
    let z = (secs / 86_400) as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let rem = secs % 86_400;
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        since.subsec_millis()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn lines_are_json_objects_filtered_by_level() {
        let (logger, lines) = Logger::memory(Level::Info);
        logger.log(Level::Debug, "hidden", Value::Null);
        logger.log(Level::Info, "shown", serde_json::json!({"path": "/\"x\n"}));
        let lines = lines.lock().unwrap();
        assert_eq!(lines.len(), 1);
        let line: Value = serde_json::from_str(&lines[0]).unwrap();
        assert_eq!(line["level"], "info");
        assert_eq!(line["msg"], "shown");
        assert_eq!(line["path"], "/\"x\n");
    }

    #[test]
    fn timestamps_are_utc_dates() {
        let at = |secs: u64, millis: u64| {
            timestamp(UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_millis(millis))
        };
        assert_eq!(at(0, 0), "1970-01-01T00:00:00.000Z");
        assert_eq!(at(951_782_400, 5), "2000-02-29T00:00:00.005Z");
        assert_eq!(at(1_764_100_380, 123), "2025-11-25T19:53:00.123Z");
    }
}
