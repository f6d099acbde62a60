//! The local platform: real processes and real HTTP on loopback.
