//! Configuration from the environment (twelve-factor): every setting, its default and its check.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use crate::log::Level;

/// Everything the service reads from its environment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// `BIND_ADDR`, default 0.0.0.0: a platform routes to the container's interface.
    pub bind_addr: IpAddr,
    /// `PORT`, else `VCAP_APP_PORT` (older Cloud Foundry), else 8080.
    pub port: u16,
    /// `LOG_LEVEL`: error, warn, info (the default) or debug, in any case.
    pub log_level: Level,
    /// `VERSION` (the manifest sets it), else the crate's version.
    pub version: String,
}

impl Config {
    /// Reads the process environment.
    pub fn from_env() -> Result<Config, String> {
        Config::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads settings through `lookup`, so that tests pass a map instead of changing the
    /// process's environment. An empty value counts as unset.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Config, String> {
        let get = |name: &str| lookup(name).filter(|value| !value.trim().is_empty());
        let invalid = |name: &str, value: &str, expected: &str| {
            format!("invalid {name}={value:?}: expected {expected}")
        };
        let bind_addr = match get("BIND_ADDR") {
            Some(value) => value
                .trim()
                .parse()
                .map_err(|_| invalid("BIND_ADDR", &value, "an IP address such as 0.0.0.0"))?,
            None => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        };
        let port = match ["PORT", "VCAP_APP_PORT"]
            .into_iter()
            .find_map(|name| get(name).map(|value| (name, value)))
        {
            Some((name, value)) => value
                .trim()
                .parse()
                .map_err(|_| invalid(name, &value, "a port number from 0 to 65535"))?,
            None => 8080,
        };
        let log_level = match get("LOG_LEVEL") {
            Some(value) => Level::parse(&value)
                .ok_or_else(|| invalid("LOG_LEVEL", &value, "error, warn, info or debug"))?,
            None => Level::Info,
        };
        let version = get("VERSION")
            .map(|value| value.trim().to_string())
            .unwrap_or_else(|| env!("CARGO_PKG_VERSION").to_string());
        Ok(Config {
            bind_addr,
            port,
            log_level,
            version,
        })
    }

    pub fn socket_addr(&self) -> SocketAddr {
        SocketAddr::new(self.bind_addr, self.port)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(vars: &[(&str, &str)]) -> Result<Config, String> {
        Config::from_lookup(|name| {
            vars.iter()
                .find(|(key, _)| *key == name)
                .map(|(_, value)| value.to_string())
        })
    }

    #[test]
    fn defaults_suit_a_platform() {
        let config = parse(&[]).unwrap();
        assert_eq!(config.socket_addr().to_string(), "0.0.0.0:8080");
        assert_eq!(config.log_level, Level::Info);
        assert_eq!(config.version, env!("CARGO_PKG_VERSION"));
    }

    #[test]
    fn port_comes_from_port_then_vcap_app_port() {
        assert_eq!(parse(&[("VCAP_APP_PORT", "9000")]).unwrap().port, 9000);
        let both = parse(&[("PORT", "7000"), ("VCAP_APP_PORT", "9000")]).unwrap();
        assert_eq!(both.port, 7000);
        assert_eq!(
            parse(&[("PORT", ""), ("VCAP_APP_PORT", "9000")])
                .unwrap()
                .port,
            9000
        );
    }

    #[test]
    fn invalid_values_name_the_variable() {
        for (name, value) in [
            ("PORT", "http"),
            ("BIND_ADDR", "everywhere"),
            ("LOG_LEVEL", "loud"),
        ] {
            let err = parse(&[(name, value)]).unwrap_err();
            assert!(err.starts_with(&format!("invalid {name}=")), "{err}");
        }
    }

    /// `cdflow bump` keeps the manifest's VERSION equal to Cargo.toml's version.
    #[test]
    fn the_manifest_carries_the_crate_version() {
        let manifest = include_str!("../manifest.yml");
        let line = format!("VERSION: \"{}\"", env!("CARGO_PKG_VERSION"));
        assert!(manifest.contains(&line), "manifest.yml lacks {line}");
    }
}
