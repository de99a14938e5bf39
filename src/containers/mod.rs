//! Container base images placed pre-expanded into the host's image store.

pub mod store;
