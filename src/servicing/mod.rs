//! Offline package servicing for Windows Server Nano images: the known-package catalog and
//! the Component-Based Servicing naming rules.
//!
//! Sources: facts-cbs.md (CBS naming and data facts) and domain.md sections 2 and 6.

pub mod cab;
pub mod catalog;
pub mod drivers;
pub mod inf;
pub mod keyform;
pub mod manifest;
pub mod media;
pub mod mum;
pub mod project;
pub mod resolve;
pub mod sddl;
pub mod synth;
