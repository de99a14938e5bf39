//! One module per on-disk format.

pub mod fat;
pub mod gpt;
pub mod ntfs;
pub mod raw;
pub mod regf;
pub mod vhd;
pub mod vhdx;
pub mod wim;
