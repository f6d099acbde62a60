//! Configuration from the environment (twelve-factor): every setting, its default and its validation.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use crate::log::Level;

/// The version reported when `VERSION` is not set: the crate's own.
pub const CRATE_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Everything the service reads from its environment, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// `BIND_ADDR`, default 0.0.0.0: a PaaS routes to the container's interface, not loopback.
    pub bind_addr: IpAddr,
    /// `PORT`, else `VCAP_APP_PORT` (older Cloud Foundry), else 8080.
    pub port: u16,
    /// `MAX_BODY_BYTES`, default 1 MiB: the largest POST body accepted.
    pub max_body_bytes: usize,
    /// `LOG_LEVEL` (error, warn, info, debug; any case), default info.
    pub log_level: Level,
    /// `VERSION` (the manifest sets it), else the crate version.
    pub version: String,
    /// `SHUTDOWN_GRACE_SECONDS`, default 10: how long in-flight requests get after SIGTERM.
    pub shutdown_grace: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            bind_addr: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            port: 8080,
            max_body_bytes: 1024 * 1024,
            log_level: Level::Info,
            version: CRATE_VERSION.to_owned(),
            shutdown_grace: Duration::from_secs(10),
        }
    }
}

/// A setting that was present but unusable; shown to the operator as is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub variable: &'static str,
    pub value: String,
    pub expected: &'static str,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid {}={:?}: expected {}",
            self.variable, self.value, self.expected
        )
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// Reads the process environment.
    pub fn from_env() -> Result<Config, ConfigError> {
        Config::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads settings through `lookup`, so tests can pass a map instead of
    /// mutating the (process-global, racy) environment. An empty value counts
    /// as unset, because manifests and shells often leave `VAR=` behind.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let get = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
        let mut config = Config::default();

        if let Some(v) = get("BIND_ADDR") {
            config.bind_addr = v.trim().parse().map_err(|_| ConfigError {
                variable: "BIND_ADDR",
                value: v.clone(),
                expected: "an ip address such as 0.0.0.0, 127.0.0.1 or ::",
            })?;
        }

        // PORT wins when set, even if VCAP_APP_PORT is too: a wrong PORT is an
        // error rather than a silent fall back to the other variable.
        let port_var = ["PORT", "VCAP_APP_PORT"]
            .into_iter()
            .find_map(|name| get(name).map(|v| (name, v)));
        if let Some((name, v)) = port_var {
            config.port = v.trim().parse().map_err(|_| ConfigError {
                variable: name,
                value: v.clone(),
                expected: "a port number from 0 to 65535",
            })?;
        }

        if let Some(v) = get("MAX_BODY_BYTES") {
            config.max_body_bytes = v
                .trim()
                .parse()
                .ok()
                .filter(|&n: &usize| n > 0)
                .ok_or_else(|| ConfigError {
                    variable: "MAX_BODY_BYTES",
                    value: v.clone(),
                    expected: "a whole number of bytes, at least 1",
                })?;
        }

        if let Some(v) = get("LOG_LEVEL") {
            config.log_level = Level::parse(&v).ok_or_else(|| ConfigError {
                variable: "LOG_LEVEL",
                value: v.clone(),
                expected: "one of error, warn, info, debug (any case)",
            })?;
        }

        if let Some(v) = get("VERSION") {
            config.version = v.trim().to_owned();
        }

        if let Some(v) = get("SHUTDOWN_GRACE_SECONDS") {
            let secs: u64 = v.trim().parse().map_err(|_| ConfigError {
                variable: "SHUTDOWN_GRACE_SECONDS",
                value: v.clone(),
                expected: "a whole number of seconds",
            })?;
            config.shutdown_grace = Duration::from_secs(secs);
        }

        Ok(config)
    }

    /// The socket address to bind.
    pub fn socket_addr(&self) -> SocketAddr {
        SocketAddr::new(self.bind_addr, self.port)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn parse(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_lookup(|name| map.get(name).cloned())
    }

    #[test]
    fn defaults_suit_a_paas() {
        let c = parse(&[]).unwrap();
        assert_eq!(c.socket_addr().to_string(), "0.0.0.0:8080");
        assert_eq!(c.max_body_bytes, 1 << 20);
        assert_eq!(c.log_level, Level::Info);
        assert_eq!(c.version, CRATE_VERSION);
        assert_eq!(c.shutdown_grace, Duration::from_secs(10));
    }

    #[test]
    fn port_comes_from_port_then_vcap_app_port() {
        assert_eq!(parse(&[("VCAP_APP_PORT", "9000")]).unwrap().port, 9000);
        let both = parse(&[("PORT", "7000"), ("VCAP_APP_PORT", "9000")]).unwrap();
        assert_eq!(both.port, 7000);
        // An empty PORT is unset, so the fallback applies.
        let empty = parse(&[("PORT", ""), ("VCAP_APP_PORT", "9000")]).unwrap();
        assert_eq!(empty.port, 9000);
    }

    #[test]
    fn every_setting_is_read() {
        let c = parse(&[
            ("BIND_ADDR", "127.0.0.1"),
            ("PORT", "18080"),
            ("MAX_BODY_BYTES", "64"),
            ("LOG_LEVEL", "DEBUG"),
            ("VERSION", "1.2.3"),
            ("SHUTDOWN_GRACE_SECONDS", "3"),
        ])
        .unwrap();
        assert_eq!(c.socket_addr().to_string(), "127.0.0.1:18080");
        assert_eq!(c.max_body_bytes, 64);
        assert_eq!(c.log_level, Level::Debug);
        assert_eq!(c.version, "1.2.3");
        assert_eq!(c.shutdown_grace, Duration::from_secs(3));
        assert!(parse(&[("BIND_ADDR", "::")]).unwrap().bind_addr.is_ipv6());
    }

    /// The manifest's env block, read with a line scan (it is flat `KEY: "value"`).
    fn manifest_env() -> HashMap<String, String> {
        let manifest = include_str!("../manifest.yml");
        let env = manifest.split("\n  env:\n").nth(1).expect("an env block");
        env.lines()
            .take_while(|l| l.starts_with("    "))
            .filter_map(|l| l.trim().split_once(':'))
            .map(|(k, v)| (k.to_owned(), v.trim().trim_matches('"').to_owned()))
            .collect()
    }

    #[test]
    fn manifest_version_is_the_crate_version_and_its_env_is_valid() {
        let env = manifest_env();
        assert_eq!(env["VERSION"], CRATE_VERSION, "manifest.yml VERSION");
        let c = Config::from_lookup(|name| env.get(name).cloned()).unwrap();
        assert_eq!(c.log_level, Level::Info);
        assert_eq!(c.version, CRATE_VERSION);
        let manifest = include_str!("../manifest.yml");
        assert!(manifest.contains("health-check-http-endpoint: /health\n"));
    }

    #[test]
    fn invalid_values_are_errors_that_name_the_variable() {
        let cases = [
            ("PORT", "http"),
            ("PORT", "70000"),
            ("PORT", "-1"),
            ("VCAP_APP_PORT", "x"),
            ("BIND_ADDR", "localhost"),
            ("MAX_BODY_BYTES", "0"),
            ("MAX_BODY_BYTES", "1MB"),
            ("LOG_LEVEL", "verbose"),
            ("SHUTDOWN_GRACE_SECONDS", "1.5"),
        ];
        for (var, value) in cases {
            let err = parse(&[(var, value)]).unwrap_err();
            assert_eq!(err.variable, var);
            let msg = err.to_string();
            assert!(msg.starts_with(&format!("invalid {var}=")), "{msg}");
            assert!(msg.contains(value), "{msg}");
        }
    }
}
