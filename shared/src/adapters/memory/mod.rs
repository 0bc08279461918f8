//! Memory adapters.
