//! Use cases: what Sluice does, generic over the ports ([`crate::ports::Backend`],
//! [`crate::ports::ToolClient`]) and run inside an [`crate::app::App`].

pub mod api;
pub mod execute;
pub mod intake;
pub mod reliability;
pub mod sweep;
