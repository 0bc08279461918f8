//! End-to-end harness: the whole system in-process on ministack ([`system`]), driven over
//! HTTP, calling a recording connector server ([`connector`]).

pub mod connector;
pub mod system;

pub use connector::{Call, RecordingConnector, Reply};
pub use system::{ManifestSpec, Setup, System};
