//! The harness of cdflow's integration tests, one module per idea: projects in temporary folders
//! and the cdflow binary run in them (`project`), processes and the guard that stops them
//! (`processes`), the one HTTP client over loopback (`http`), and the local platform with its
//! test apps (`platform`). Everything is re-exported here: tests use `crate::harness::Name`.

mod http;
mod platform;
mod processes;
mod project;

pub use http::*;
pub use platform::*;
pub use processes::*;
pub use project::*;
