//! The tenant policy file (TOML). Every key is optional; an absent key takes the secure
//! default (debug refused, migration agent refused, VMPL 0 required, provisional firmware
//! refused). Unknown keys are refused, so a misspelt key cannot silently weaken a policy.
//!
//! ```toml
//! minimum_guest_svn = 4
//! measurements = ["a1f393...", "..."]
//! vmpl = 0                      # or "any"
//! permit_provisional_firmware = false
//! [minimum_reported_tcb]
//! bootloader = 3
//! microcode = 0x73
//! [launch]                      # what `run --policy` may launch
//! allow_simulation = true
//! ```

use serde::{Deserialize, Deserializer, Serialize};
use thiserror::Error;

/// Errors of policy loading.
#[derive(Debug, Error)]
pub enum PolicyError {
    /// The file could not be read.
    #[error("cannot read policy file {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The TOML is malformed, has an unknown key or a value of the wrong shape.
    #[error("policy file {path}: {source}")]
    Toml {
        /// The file.
        path: String,
        /// The parser's message (names the key and line).
        source: toml::de::Error,
    },
}

/// Bytes given as a hex string of exactly `N` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hex<const N: usize>(pub [u8; N]);

impl<'de, const N: usize> Deserialize<'de> for Hex<N> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        let s = s.trim().trim_start_matches("0x");
        let bytes = hex::decode(s).map_err(|e| {
            serde::de::Error::custom(format!("expected {N} bytes as hex digits: {e}"))
        })?;
        let len = bytes.len();
        let arr: [u8; N] = bytes.try_into().map_err(|_| {
            serde::de::Error::custom(format!("expected {N} bytes as hex, found {len} bytes"))
        })?;
        Ok(Self(arr))
    }
}

impl<const N: usize> Serialize for Hex<N> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(self.0))
    }
}

/// A version "major.minor" (each 0..=255).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct MajorMinor {
    /// Major number.
    pub major: u8,
    /// Minor number.
    pub minor: u8,
}

impl<'de> Deserialize<'de> for MajorMinor {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        let bad = || {
            serde::de::Error::custom(format!(
                "expected \"major.minor\" (0-255 each), found {s:?}"
            ))
        };
        let (a, b) = s.split_once('.').ok_or_else(bad)?;
        Ok(Self {
            major: a.parse().map_err(|_| bad())?,
            minor: b.parse().map_err(|_| bad())?,
        })
    }
}

impl Serialize for MajorMinor {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl std::fmt::Display for MajorMinor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// The required VMPL: a level 0..=3, or "any".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Vmpl {
    /// The report's VMPL must equal this level.
    Level(u8),
    /// Any VMPL is accepted.
    Any,
}

impl Default for Vmpl {
    fn default() -> Self {
        Self::Level(0)
    }
}

impl<'de> Deserialize<'de> for Vmpl {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Level(i64),
            Word(String),
        }
        match Raw::deserialize(d)? {
            Raw::Level(n @ 0..=3) => Ok(Self::Level(n as u8)),
            Raw::Word(w) if w == "any" => Ok(Self::Any),
            Raw::Level(n) => Err(serde::de::Error::custom(format!(
                "vmpl must be 0-3 or \"any\", found {n}"
            ))),
            Raw::Word(w) => Err(serde::de::Error::custom(format!(
                "vmpl must be 0-3 or \"any\", found {w:?}"
            ))),
        }
    }
}

impl Serialize for Vmpl {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Level(n) => s.serialize_u8(*n),
            Self::Any => s.serialize_str("any"),
        }
    }
}

/// A component-wise minimum TCB; absent components are 0 (not checked).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TcbMinimum {
    /// Minimum boot loader SPL.
    pub bootloader: u8,
    /// Minimum TEE SPL.
    pub tee: u8,
    /// Minimum SNP firmware SPL.
    pub snp: u8,
    /// Minimum microcode SPL.
    pub microcode: u8,
    /// Minimum FMC SPL (Turin; a report of another generation fails when this is above 0).
    pub fmc: u8,
}

/// Limits on PLATFORM_INFO (go-sev-guest's `PlatformInfo` option).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct PlatformPolicy {
    /// Accept a platform with SMT enabled (SMT_EN).
    pub allow_smt_enabled: bool,
    /// Accept a platform with TSME enabled (TSME_EN).
    pub allow_tsme_enabled: bool,
    /// Require ECC memory (ECC_EN).
    pub require_ecc: bool,
    /// Require RAPL disabled (RAPL_DIS).
    pub require_rapl_disabled: bool,
    /// Require ciphertext hiding for DRAM enabled (CIPHERTEXT_HIDING_DRAM_EN).
    pub require_ciphertext_hiding: bool,
    /// Require the memory alias check to have completed (ALIAS_CHECK_COMPLETE).
    pub require_alias_check_complete: bool,
}

impl Default for PlatformPolicy {
    fn default() -> Self {
        Self {
            allow_smt_enabled: true,
            allow_tsme_enabled: true,
            require_ecc: false,
            require_rapl_disabled: false,
            require_ciphertext_hiding: false,
            require_alias_check_complete: false,
        }
    }
}

/// The `[launch]` table: what `cloister run --policy` may launch (the memory-encryption
/// policy). `cloister verify` checks reports; these keys govern the launch before the VM
/// exists (see `docs/launch-policy.md`, one row per rule).
///
/// A policy file without a `[launch]` table gets these defaults, chosen so that every
/// existing policy file keeps its meaning for `verify` (no key here changes a check of a
/// report) and means "a real SEV-SNP launch" for `run`: such a file speaks only of SNP
/// reports, and no other launch can produce a report it accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LaunchPolicy {
    /// Refuse a launch without SEV-SNP (`run --platform none`), whose memory the host can
    /// read and write. Default true: set false to run the same guest on plain KVM too.
    pub require_snp: bool,
    /// Accept the simulated platform (`run --platform sim`). Default false: a simulated
    /// launch encrypts no memory and its report is signed by the Cloister simulation root,
    /// not AMD, so the tenant opts in explicitly (tests, CI, development).
    pub allow_simulation: bool,
    /// Let the guest convert private pages to shared (MAP_GPA_RANGE/page-state changes).
    /// Default true: a Linux SNP guest shares its GHCB pages, its SWIOTLB bounce buffers
    /// (all virtio DMA) and its guest-request pages, and stops without them. With false
    /// the monitor refuses every conversion to shared at run time, and `run` refuses any
    /// virtio device (its DMA needs shared memory); only a guest that never shares a page
    /// can run.
    pub allow_shared_memory: bool,
}

impl Default for LaunchPolicy {
    fn default() -> Self {
        Self {
            require_snp: true,
            allow_simulation: false,
            allow_shared_memory: true,
        }
    }
}

/// Which key must have signed the report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Signer {
    /// The chip's VCEK.
    Vcek,
    /// A cloud provider's VLEK.
    Vlek,
}

/// The tenant policy: what a genuine report must also satisfy to be accepted.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Policy {
    /// Minimum guest-policy ABI version ("major.minor") the guest was launched to require.
    pub abi_minimum: Option<MajorMinor>,
    /// Accept a guest whose policy allows SMT (POLICY bit 16). Default true: every platform
    /// with SMT on sets it.
    pub allow_smt: bool,
    /// Accept a guest whose policy allows a migration agent (bit 18). Default false.
    pub allow_migration_agent: bool,
    /// Accept a guest whose policy allows debugging (bit 19). Default false: the host can
    /// read and write a debuggable guest's memory.
    pub allow_debug: bool,
    /// Require the single-socket restriction (bit 20).
    pub require_single_socket: bool,
    /// Accept a guest whose policy allows CXL (bit 21). Default false.
    pub allow_cxl: bool,
    /// Require AES-256-XTS memory encryption (bit 22, MEM_AES_256_XTS).
    pub require_mem_aes_256_xts: bool,
    /// Require RAPL disabled (bit 23).
    pub require_rapl_disabled: bool,
    /// Require ciphertext hiding for DRAM (bit 24).
    pub require_ciphertext_hiding: bool,
    /// Require page swap disabled (bit 25).
    pub require_page_swap_disabled: bool,
    /// Minimum GUEST_SVN.
    pub minimum_guest_svn: u32,
    /// Exact REPORT_DATA (64 bytes hex).
    pub report_data: Option<Hex<64>>,
    /// Exact HOST_DATA (32 bytes hex).
    pub host_data: Option<Hex<32>>,
    /// Exact IMAGE_ID (16 bytes hex).
    pub image_id: Option<Hex<16>>,
    /// Exact FAMILY_ID (16 bytes hex).
    pub family_id: Option<Hex<16>>,
    /// Exact REPORT_ID (32 bytes hex).
    pub report_id: Option<Hex<32>>,
    /// Exact REPORT_ID_MA (32 bytes hex).
    pub report_id_ma: Option<Hex<32>>,
    /// Exact CHIP_ID (64 bytes hex).
    pub chip_id: Option<Hex<64>>,
    /// Accepted MEASUREMENT values (48 bytes hex each); empty means not checked.
    pub measurements: Vec<Hex<48>>,
    /// Minimum CURRENT_BUILD of the firmware.
    pub minimum_build: Option<u8>,
    /// Minimum firmware API version CURRENT_MAJOR.CURRENT_MINOR ("major.minor").
    pub minimum_version: Option<MajorMinor>,
    /// Component-wise minimum CURRENT_TCB.
    pub minimum_current_tcb: Option<TcbMinimum>,
    /// Component-wise minimum REPORTED_TCB (go-sev-guest's MinimumTCB).
    pub minimum_reported_tcb: Option<TcbMinimum>,
    /// Component-wise minimum COMMITTED_TCB.
    pub minimum_committed_tcb: Option<TcbMinimum>,
    /// Component-wise minimum LAUNCH_TCB (go-sev-guest's MinimumLaunchTCB).
    pub minimum_launch_tcb: Option<TcbMinimum>,
    /// Accept firmware that runs above what it committed (CURRENT_TCB above COMMITTED_TCB, or
    /// current build/version above committed). Default false: current must equal committed.
    pub permit_provisional_firmware: bool,
    /// Required VMPL of the report: 0-3 or "any". Default 0.
    pub vmpl: Vmpl,
    /// Require AUTHOR_KEY_EN and an AUTHOR_KEY_DIGEST in `trusted_author_key_digests`
    /// (implies `require_id_block`).
    pub require_author_key: bool,
    /// Require an ID block whose ID_KEY_DIGEST is in `trusted_id_key_digests` (or whose
    /// author key is trusted).
    pub require_id_block: bool,
    /// Trusted author key digests (SHA-384 of the key in SNP ABI format, 48 bytes hex).
    pub trusted_author_key_digests: Vec<Hex<48>>,
    /// Trusted ID key digests (48 bytes hex).
    pub trusted_id_key_digests: Vec<Hex<48>>,
    /// Mitigation bits that LAUNCH_MIT_VECTOR must all have (report version 5).
    pub minimum_launch_mit_vector: Option<u64>,
    /// Mitigation bits that CURRENT_MIT_VECTOR must all have (report version 5).
    pub minimum_current_mit_vector: Option<u64>,
    /// Limits on PLATFORM_INFO; absent means not checked.
    pub platform: Option<PlatformPolicy>,
    /// Require this signer ("vcek" or "vlek"); absent means either.
    pub signer: Option<Signer>,
    /// What `cloister run --policy` may launch (the `[launch]` table); not used by
    /// `verify`.
    pub launch: LaunchPolicy,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            abi_minimum: None,
            allow_smt: true,
            allow_migration_agent: false,
            allow_debug: false,
            require_single_socket: false,
            allow_cxl: false,
            require_mem_aes_256_xts: false,
            require_rapl_disabled: false,
            require_ciphertext_hiding: false,
            require_page_swap_disabled: false,
            minimum_guest_svn: 0,
            report_data: None,
            host_data: None,
            image_id: None,
            family_id: None,
            report_id: None,
            report_id_ma: None,
            chip_id: None,
            measurements: Vec::new(),
            minimum_build: None,
            minimum_version: None,
            minimum_current_tcb: None,
            minimum_reported_tcb: None,
            minimum_committed_tcb: None,
            minimum_launch_tcb: None,
            permit_provisional_firmware: false,
            vmpl: Vmpl::Level(0),
            require_author_key: false,
            require_id_block: false,
            trusted_author_key_digests: Vec::new(),
            trusted_id_key_digests: Vec::new(),
            minimum_launch_mit_vector: None,
            minimum_current_mit_vector: None,
            platform: None,
            signer: None,
            launch: LaunchPolicy::default(),
        }
    }
}

impl Policy {
    /// Parses a policy from TOML text; `path` names it in errors.
    pub fn from_toml(text: &str, path: &str) -> Result<Self, PolicyError> {
        toml::from_str(text).map_err(|source| PolicyError::Toml {
            path: path.to_string(),
            source,
        })
    }

    /// Reads and parses a policy file.
    pub fn from_file(path: &std::path::Path) -> Result<Self, PolicyError> {
        let text = std::fs::read_to_string(path).map_err(|source| PolicyError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_toml(&text, &path.display().to_string())
    }
}
