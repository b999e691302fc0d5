//! SHA-256 of the guest's disks: the `sha2` crate (its portable software backend, selected
//! by `--cfg sha2_backend="soft"` in `vmm/build.rs`: this machine's KVM emulates neither
//! SHA-NI nor SSE). The guest writes no cryptography of its own; this file only gives the
//! crate's hasher the small interface the guest uses.
//!
//! The host integration tests (`tests/tests/run_guest.rs`) include this file with `#[path]`
//! and compare it with known vectors; it compiles there against the workspace's `sha2`.

use sha2::Digest as _;

/// An incremental SHA-256 computation.
pub struct Sha256(sha2::Sha256);

impl Default for Sha256 {
    fn default() -> Self {
        Self::new()
    }
}

impl Sha256 {
    /// A fresh hash of the empty message.
    pub fn new() -> Self {
        Self(sha2::Sha256::new())
    }

    /// Appends `data` to the message.
    pub fn update(&mut self, data: &[u8]) {
        self.0.update(data);
    }

    /// The 32-byte digest of everything appended.
    pub fn finish(self) -> [u8; 32] {
        let mut out = [0u8; 32];
        out.copy_from_slice(&self.0.finalize());
        out
    }
}

/// SHA-256 of `data` in one call.
#[allow(dead_code)]
pub fn digest(data: &[u8]) -> [u8; 32] {
    let mut hash = Sha256::new();
    hash.update(data);
    hash.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_vectors_whole_and_split() {
        let abc = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        let hex = |d: [u8; 32]| d.iter().map(|b| format!("{b:02x}")).collect::<String>();
        assert_eq!(hex(digest(b"abc")), abc);
        let mut split = Sha256::new();
        split.update(b"a");
        split.update(b"bc");
        assert_eq!(hex(split.finish()), abc);
        assert_eq!(
            hex(Sha256::default().finish()),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}
