//! Build steps that combine formats into images. Each step is planned before anything is
//! written, then carried out into a temporary output that is renamed when complete.

pub mod boot;
pub mod build;
pub mod config;
pub mod demo;
pub mod disk;
pub mod seed;
pub mod service;
pub mod settings;
