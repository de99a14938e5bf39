//! The build seed: every GUID, serial and volume id we write is derived from it.
//!
//! A user may pass `--seed TEXT`. Without one, the seed is the SHA-256 of the build's
//! settings and input digests, so the same inputs always give the same image while two
//! different images never share disk or partition GUIDs (duplicates break attaching a
//! disk next to its source).

use sha2::{Digest, Sha256};

/// Collects the settings and inputs that make up a default seed.
#[derive(Default)]
pub struct SeedBuilder(Sha256);

impl SeedBuilder {
    pub fn new(purpose: &str) -> Self {
        let mut h = Sha256::new();
        h.update(b"nanoforge-seed\0");
        h.update(purpose.as_bytes());
        SeedBuilder(h)
    }

    /// Add one labelled field (length-prefixed so fields cannot run together).
    pub fn add(&mut self, label: &str, value: &[u8]) -> &mut Self {
        for part in [label.as_bytes(), value] {
            self.0.update((part.len() as u64).to_le_bytes());
            self.0.update(part);
        }
        self
    }

    pub fn finish(self) -> Vec<u8> {
        self.0.finalize().to_vec()
    }
}

/// The seed bytes: the user's text when given, else the derived digest.
pub fn resolve(user: Option<&str>, derived: SeedBuilder) -> Vec<u8> {
    match user {
        Some(s) => s.as_bytes().to_vec(),
        None => derived.finish(),
    }
}

/// Hex form for reports.
pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
