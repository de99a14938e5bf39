//! nanoforge: build bootable Windows Server Nano disk images without Windows.
//!
//! Dependencies point one way: `cli → pipeline → formats → codec → core`. Every module
//! under `formats` reads or writes one on-disk format and could stand alone; `image`
//! picks the container format of a disk image.
#![forbid(unsafe_code)]

pub mod cli;
pub mod codec;
pub mod containers;
pub mod core;
pub mod formats;
pub mod image;
pub mod pipeline;
pub mod servicing;
pub mod tree;
