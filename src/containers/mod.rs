//! Container base images placed pre-expanded into the host's image store.

pub mod blank;
pub mod store;
