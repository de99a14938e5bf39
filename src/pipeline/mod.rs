//! Build steps that combine formats into images. Each step is planned before anything is
//! written, then carried out into a temporary output that is renamed when complete.

pub mod boot;
pub mod disk;
pub mod seed;
pub mod settings;
