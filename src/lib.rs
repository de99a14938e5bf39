//! nanoforge: build bootable Windows Server Nano disk images without Windows.
//!
//! Dependencies point one way: `cli → pipeline → formats → codec → core`. Every module
//! under `formats` reads or writes one on-disk format and could stand alone.
#![forbid(unsafe_code)]

pub mod codec;
pub mod core;
pub mod formats;
