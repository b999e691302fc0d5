//! AMD's root certificates, built in: ARK, ASK and ASVK for Milan, Genoa and Turin, as AMD's
//! key distribution service publishes them (copied from the project's vectors into
//! `attestation/roots/`).

use std::sync::OnceLock;

use super::Certificate;
use crate::report::Generation;

/// The built-in ARK, ASK and ASVK of one generation.
#[derive(Debug, Clone)]
pub struct BuiltinRoots {
    /// AMD Root Key.
    pub ark: Certificate,
    /// AMD SEV Signing Key (signs VCEKs).
    pub ask: Certificate,
    /// AMD SEV VLEK Signing Key (signs VLEKs).
    pub asvk: Certificate,
}

const PEMS: [(Generation, &str, &str, &str); 3] = [
    (
        Generation::Milan,
        include_str!("../../roots/milan/ark.pem"),
        include_str!("../../roots/milan/ask.pem"),
        include_str!("../../roots/milan/asvk.pem"),
    ),
    (
        Generation::Genoa,
        include_str!("../../roots/genoa/ark.pem"),
        include_str!("../../roots/genoa/ask.pem"),
        include_str!("../../roots/genoa/asvk.pem"),
    ),
    (
        Generation::Turin,
        include_str!("../../roots/turin/ark.pem"),
        include_str!("../../roots/turin/ask.pem"),
        include_str!("../../roots/turin/asvk.pem"),
    ),
];

fn parse_one(pem: &str, what: &str) -> Option<Certificate> {
    Certificate::parse_all(pem.as_bytes(), what)
        .ok()
        .and_then(|v| v.into_iter().next())
}

fn load(generation: Generation) -> Option<BuiltinRoots> {
    let (_, ark, ask, asvk) = PEMS.iter().find(|(g, ..)| *g == generation)?;
    Some(BuiltinRoots {
        ark: parse_one(ark, "built-in ARK")?,
        ask: parse_one(ask, "built-in ASK")?,
        asvk: parse_one(asvk, "built-in ASVK")?,
    })
}

/// The built-in roots of `generation` (parsed once). `None` only if the embedded PEM were
/// corrupt, which a unit test rules out.
pub fn builtin_roots(generation: Generation) -> Option<&'static BuiltinRoots> {
    static CELLS: [OnceLock<Option<BuiltinRoots>>; 3] =
        [OnceLock::new(), OnceLock::new(), OnceLock::new()];
    let index = match generation {
        Generation::Milan => 0,
        Generation::Genoa => 1,
        Generation::Turin => 2,
    };
    CELLS
        .get(index)
        .and_then(|cell| cell.get_or_init(|| load(generation)).as_ref())
}
