//! The ports instances listen on.
//!
//! A port is chosen by binding it and letting it go, and the instance binds it again a moment
//! later. Taken from the kernel's ephemeral range (port 0), it could meanwhile become the local
//! port of some outgoing connection, which the kernel picks from that same range; the route's
//! own connections to instances are such connections. So ports are drawn at random below the
//! ephemeral range, where only a program that asks for a port by number can take one, and from
//! the range only when no port below it is free. The ports of routes whose environment has no
//! configured port ([`super::HASHED_PORTS`]) are left out.

use std::hash::{BuildHasher, Hasher};
use std::net::TcpListener;

/// The lowest port drawn from: above the well-known and most registered ports.
const LOWEST: u16 = 10_000;
/// How many random ports are tried before falling back to the ephemeral range.
const TRIES: usize = 64;
/// Linux's default ephemeral range, for when `/proc` does not say.
const DEFAULT_EPHEMERAL: (u16, u16) = (32_768, 60_999);

/// A free port on 127.0.0.1 for an instance.
pub fn free_port() -> std::io::Result<u16> {
    let (ephemeral_low, _) = ephemeral_range();
    if ephemeral_low > LOWEST {
        let span = u64::from(ephemeral_low - LOWEST);
        for _ in 0..TRIES {
            let port = LOWEST + (random() % span) as u16;
            // Routes of environments without a configured port live there.
            if super::HASHED_PORTS.contains(&port) {
                continue;
            }
            if TcpListener::bind(("127.0.0.1", port)).is_ok() {
                return Ok(port);
            }
        }
    }
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Why this process may not serve a route on `port`, if it may not, as `bind` tells. Ports
/// below 1024 need root, CAP_NET_BIND_SERVICE or a lowered
/// `net.ipv4.ip_unprivileged_port_start`; trying to bind is the one test that knows all three.
/// A port in use says nothing about that: the deploy names whoever holds it.
pub fn privileged_problem(
    port: u16,
    bind: impl FnOnce(u16) -> std::io::Result<()>,
) -> Option<String> {
    if port >= 1024 {
        return None;
    }
    match bind(port) {
        Err(err) if err.kind() == std::io::ErrorKind::PermissionDenied => Some(format!(
            "ports below 1024 need root or CAP_NET_BIND_SERVICE, and this user may not bind it \
             ({err})"
        )),
        _ => None,
    }
}

/// Binds `port` on 127.0.0.1 and lets it go at once.
pub fn try_bind(port: u16) -> std::io::Result<()> {
    TcpListener::bind(("127.0.0.1", port)).map(drop)
}

/// The kernel's ephemeral port range, from `/proc/sys/net/ipv4/ip_local_port_range`.
fn ephemeral_range() -> (u16, u16) {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|text| {
            let mut numbers = text.split_whitespace().map(str::parse::<u16>);
            Some((numbers.next()?.ok()?, numbers.next()?.ok()?))
        })
        .unwrap_or(DEFAULT_EPHEMERAL)
}

/// A random number from the standard library's randomly seeded hasher: enough to spread
/// ports, no generator crate needed.
fn random() -> u64 {
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(0);
    hasher.finish()
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_privileged_port_is_a_problem_only_when_binding_it_is_denied() {
        use std::io::{Error, ErrorKind};
        let denied = |_| Err(Error::from(ErrorKind::PermissionDenied));
        let problem = super::privileged_problem(80, denied).unwrap();
        assert!(problem.contains("below 1024 need root"), "{problem}");
        assert_eq!(super::privileged_problem(80, |_| Ok(())), None);
        let in_use = |_| Err(Error::from(ErrorKind::AddrInUse));
        assert_eq!(super::privileged_problem(80, in_use), None);
        let never = |_| unreachable!("ports from 1024 up are not tried");
        assert_eq!(super::privileged_problem(8081, never), None);
    }

    use super::*;

    #[test]
    fn ports_are_free_and_below_the_ephemeral_range() {
        let (low, _) = ephemeral_range();
        let ports: Vec<u16> = (0..200).map(|_| free_port().unwrap()).collect();
        for port in &ports {
            assert!(
                (LOWEST..low).contains(port),
                "{port} not in {LOWEST}..{low}"
            );
            assert!(
                !super::super::HASHED_PORTS.contains(port),
                "{port} is a route's"
            );
            // Free: it can be bound now.
            TcpListener::bind(("127.0.0.1", *port)).unwrap();
        }
        let mut distinct = ports.clone();
        distinct.sort_unstable();
        distinct.dedup();
        assert!(distinct.len() > 100, "ports not spread: {ports:?}");
    }
}
