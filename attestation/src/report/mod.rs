//! The SEV-SNP attestation report (`ATTESTATION_REPORT`, SEV-SNP firmware ABI specification,
//! "Attestation Report" table): 1184 bytes, versions 2, 3, 4 and 5.
//!
//! Parsing keeps the raw bytes (the signature is always checked over the bytes as received,
//! never over a re-serialization) and decodes every field at its ABI offset. Reserved
//! ranges that must be zero are listed by [`AttestationReport::reserved_violations`]; the
//! strict constructor [`AttestationReport::from_bytes`] refuses a report with any of them
//! set. Parsing never panics: every access is bounds-checked by construction (the buffer is
//! a fixed-size array once the length is checked).

mod tcb;

pub use tcb::{Generation, TcbParts, TcbVersion};

use thiserror::Error;

/// Size of an attestation report in bytes.
pub const REPORT_SIZE: usize = 0x4A0;
/// The ECDSA signature covers bytes `0..SIGNED_SIZE`.
pub const SIGNED_SIZE: usize = 0x2A0;
/// SIGNATURE_ALGO value for ECDSA P-384 with SHA-384.
pub const SIG_ALGO_ECDSA_P384_SHA384: u32 = 1;

/// Offsets of the report fields (ABI specification, attestation report table).
pub mod offset {
    /// VERSION (4 bytes).
    pub const VERSION: usize = 0x00;
    /// GUEST_SVN (4 bytes).
    pub const GUEST_SVN: usize = 0x04;
    /// POLICY (8 bytes).
    pub const POLICY: usize = 0x08;
    /// FAMILY_ID (16 bytes).
    pub const FAMILY_ID: usize = 0x10;
    /// IMAGE_ID (16 bytes).
    pub const IMAGE_ID: usize = 0x20;
    /// VMPL (4 bytes).
    pub const VMPL: usize = 0x30;
    /// SIGNATURE_ALGO (4 bytes).
    pub const SIGNATURE_ALGO: usize = 0x34;
    /// CURRENT_TCB (8 bytes).
    pub const CURRENT_TCB: usize = 0x38;
    /// PLATFORM_INFO (8 bytes).
    pub const PLATFORM_INFO: usize = 0x40;
    /// AUTHOR_KEY_EN, MASK_CHIP_KEY, SIGNING_KEY bits (4 bytes).
    pub const KEY_INFO: usize = 0x48;
    /// REPORT_DATA (64 bytes).
    pub const REPORT_DATA: usize = 0x50;
    /// MEASUREMENT (48 bytes).
    pub const MEASUREMENT: usize = 0x90;
    /// HOST_DATA (32 bytes).
    pub const HOST_DATA: usize = 0xC0;
    /// ID_KEY_DIGEST (48 bytes).
    pub const ID_KEY_DIGEST: usize = 0xE0;
    /// AUTHOR_KEY_DIGEST (48 bytes).
    pub const AUTHOR_KEY_DIGEST: usize = 0x110;
    /// REPORT_ID (32 bytes).
    pub const REPORT_ID: usize = 0x140;
    /// REPORT_ID_MA (32 bytes).
    pub const REPORT_ID_MA: usize = 0x160;
    /// REPORTED_TCB (8 bytes).
    pub const REPORTED_TCB: usize = 0x180;
    /// CPUID_FAM_ID (1 byte, version 3 and later).
    pub const CPUID_FAM_ID: usize = 0x188;
    /// CPUID_MOD_ID (1 byte, version 3 and later).
    pub const CPUID_MOD_ID: usize = 0x189;
    /// CPUID_STEP (1 byte, version 3 and later).
    pub const CPUID_STEP: usize = 0x18A;
    /// CHIP_ID (64 bytes).
    pub const CHIP_ID: usize = 0x1A0;
    /// COMMITTED_TCB (8 bytes).
    pub const COMMITTED_TCB: usize = 0x1E0;
    /// CURRENT_BUILD, CURRENT_MINOR, CURRENT_MAJOR (1 byte each).
    pub const CURRENT_VERSION: usize = 0x1E8;
    /// COMMITTED_BUILD, COMMITTED_MINOR, COMMITTED_MAJOR (1 byte each).
    pub const COMMITTED_VERSION: usize = 0x1EC;
    /// LAUNCH_TCB (8 bytes).
    pub const LAUNCH_TCB: usize = 0x1F0;
    /// LAUNCH_MIT_VECTOR (8 bytes, version 5 and later).
    pub const LAUNCH_MIT_VECTOR: usize = 0x1F8;
    /// CURRENT_MIT_VECTOR (8 bytes, version 5 and later).
    pub const CURRENT_MIT_VECTOR: usize = 0x200;
    /// SIGNATURE (512 bytes): R (72 bytes little-endian), S (72 bytes), reserved.
    pub const SIGNATURE: usize = 0x2A0;
}

/// Errors of report parsing.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ReportError {
    /// The input is not 1184 bytes long.
    #[error("an SEV-SNP attestation report is {expected} bytes long, this input is {found} bytes")]
    Size {
        /// Required size.
        expected: usize,
        /// Size of the input.
        found: usize,
    },
    /// The VERSION field names a layout this parser does not know.
    #[error("report VERSION is {0}; supported versions are 2, 3, 4 and 5")]
    Version(u32),
    /// A reserved field that must be zero is not.
    #[error("{0}")]
    Reserved(ReservedViolation),
    /// The signature field cannot be an ECDSA P-384 signature.
    #[error("report signature is malformed: {0}")]
    Signature(&'static str),
}

/// A reserved range (or reserved bits) of the report that is not as the ABI requires.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReservedViolation {
    /// What is reserved, in the ABI's words (for example "bytes 0x4C..0x50").
    pub field: String,
    /// What the ABI requires there.
    pub expected: String,
    /// What the report holds.
    pub found: String,
}

impl std::fmt::Display for ReservedViolation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "reserved {}: expected {}, found {}",
            self.field, self.expected, self.found
        )
    }
}

/// Which key signed the report (KEY_INFO.SIGNING_KEY, bits 4:2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum SigningKey {
    /// 0: the Versioned Chip Endorsement Key.
    Vcek,
    /// 1: the Versioned Loaded Endorsement Key.
    Vlek,
    /// 7: the report is not signed.
    None,
    /// 2..=6: reserved values.
    Reserved(u8),
}

impl SigningKey {
    fn from_bits(bits: u8) -> Self {
        match bits {
            0 => Self::Vcek,
            1 => Self::Vlek,
            7 => Self::None,
            other => Self::Reserved(other),
        }
    }

    fn bits(self) -> u32 {
        match self {
            Self::Vcek => 0,
            Self::Vlek => 1,
            Self::None => 7,
            Self::Reserved(b) => u32::from(b & 7),
        }
    }
}

impl std::fmt::Display for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Vcek => write!(f, "VCEK (0)"),
            Self::Vlek => write!(f, "VLEK (1)"),
            Self::None => write!(f, "none (7)"),
            Self::Reserved(b) => write!(f, "reserved ({b})"),
        }
    }
}

/// The KEY_INFO word at 0x48.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyInfo {
    /// AUTHOR_KEY_EN (bit 0): AUTHOR_KEY_DIGEST holds the author key digest.
    pub author_key_en: bool,
    /// MASK_CHIP_KEY (bit 1): the firmware wrote zeros instead of a signature.
    pub mask_chip_key: bool,
    /// SIGNING_KEY (bits 4:2).
    pub signing_key: SigningKey,
    /// Bits 31:5, reserved, must be zero.
    pub reserved: u32,
}

impl KeyInfo {
    fn from_u32(v: u32) -> Self {
        Self {
            author_key_en: v & 1 != 0,
            mask_chip_key: v & 2 != 0,
            signing_key: SigningKey::from_bits(((v >> 2) & 7) as u8),
            reserved: v >> 5,
        }
    }

    fn to_u32(self) -> u32 {
        u32::from(self.author_key_en)
            | (u32::from(self.mask_chip_key) << 1)
            | (self.signing_key.bits() << 2)
            | (self.reserved << 5)
    }
}

/// A firmware version (build, minor, major), as in CURRENT_* and COMMITTED_*.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct FirmwareVersion {
    /// Build number.
    pub build: u8,
    /// Minor API version.
    pub minor: u8,
    /// Major API version.
    pub major: u8,
}

impl FirmwareVersion {
    /// (major, minor) as one comparable number.
    pub fn api(self) -> u16 {
        (u16::from(self.major) << 8) | u16::from(self.minor)
    }
}

impl std::fmt::Display for FirmwareVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{} build {}", self.major, self.minor, self.build)
    }
}

/// CPUID family, model and stepping of the chip (version 3 and later).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Cpuid {
    /// Combined extended family and family.
    pub family: u8,
    /// Combined extended model and model.
    pub model: u8,
    /// Stepping.
    pub stepping: u8,
}

/// A parsed attestation report.
#[derive(Clone, PartialEq, Eq)]
pub struct AttestationReport {
    raw: Box<[u8; REPORT_SIZE]>,
    /// VERSION.
    pub version: u32,
    /// GUEST_SVN.
    pub guest_svn: u32,
    /// POLICY: the guest policy the guest was launched with.
    pub policy: u64,
    /// FAMILY_ID.
    pub family_id: [u8; 16],
    /// IMAGE_ID.
    pub image_id: [u8; 16],
    /// VMPL of the request.
    pub vmpl: u32,
    /// SIGNATURE_ALGO.
    pub signature_algo: u32,
    /// CURRENT_TCB.
    pub current_tcb: TcbVersion,
    /// PLATFORM_INFO.
    pub platform_info: u64,
    /// KEY_INFO bits.
    pub key_info: KeyInfo,
    /// REPORT_DATA: the guest's 64 bytes.
    pub report_data: [u8; 64],
    /// MEASUREMENT: the launch digest.
    pub measurement: [u8; 48],
    /// HOST_DATA.
    pub host_data: [u8; 32],
    /// ID_KEY_DIGEST.
    pub id_key_digest: [u8; 48],
    /// AUTHOR_KEY_DIGEST.
    pub author_key_digest: [u8; 48],
    /// REPORT_ID.
    pub report_id: [u8; 32],
    /// REPORT_ID_MA.
    pub report_id_ma: [u8; 32],
    /// REPORTED_TCB: the TCB the signing key was derived from.
    pub reported_tcb: TcbVersion,
    /// CPUID_FAM_ID / CPUID_MOD_ID / CPUID_STEP (version 3 and later).
    pub cpuid: Option<Cpuid>,
    /// CHIP_ID (all zero when masked; on Turin 8 bytes followed by 56 zeros).
    pub chip_id: [u8; 64],
    /// COMMITTED_TCB.
    pub committed_tcb: TcbVersion,
    /// CURRENT_BUILD / CURRENT_MINOR / CURRENT_MAJOR.
    pub current_version: FirmwareVersion,
    /// COMMITTED_BUILD / COMMITTED_MINOR / COMMITTED_MAJOR.
    pub committed_version: FirmwareVersion,
    /// LAUNCH_TCB.
    pub launch_tcb: TcbVersion,
    /// LAUNCH_MIT_VECTOR (version 5 and later).
    pub launch_mit_vector: Option<u64>,
    /// CURRENT_MIT_VECTOR (version 5 and later).
    pub current_mit_vector: Option<u64>,
    /// SIGNATURE R, 72 bytes little-endian.
    pub signature_r: [u8; 72],
    /// SIGNATURE S, 72 bytes little-endian.
    pub signature_s: [u8; 72],
}

impl std::fmt::Debug for AttestationReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AttestationReport")
            .field("version", &self.version)
            .field("guest_svn", &self.guest_svn)
            .field("policy", &format_args!("{:#x}", self.policy))
            .field("vmpl", &self.vmpl)
            .field("measurement", &hex::encode(self.measurement))
            .field("key_info", &self.key_info)
            .finish_non_exhaustive()
    }
}

fn arr<const N: usize>(raw: &[u8; REPORT_SIZE], at: usize) -> [u8; N] {
    let mut out = [0u8; N];
    if let Some(src) = raw.get(at..at + N) {
        out.copy_from_slice(src);
    }
    out
}

fn u32_at(raw: &[u8; REPORT_SIZE], at: usize) -> u32 {
    u32::from_le_bytes(arr(raw, at))
}

fn u64_at(raw: &[u8; REPORT_SIZE], at: usize) -> u64 {
    u64::from_le_bytes(arr(raw, at))
}

fn byte_at(raw: &[u8; REPORT_SIZE], at: usize) -> u8 {
    raw.get(at).copied().unwrap_or(0)
}

impl AttestationReport {
    /// Parses a report and refuses it when any reserved field is not zero.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, ReportError> {
        let report = Self::parse(bytes)?;
        if let Some(v) = report.reserved_violations().into_iter().next() {
            return Err(ReportError::Reserved(v));
        }
        Ok(report)
    }

    /// Parses a report, checking only its size and version. Reserved fields are reported by
    /// [`Self::reserved_violations`], so a verifier can name them as failed checks.
    pub fn parse(bytes: &[u8]) -> Result<Self, ReportError> {
        let raw: [u8; REPORT_SIZE] = bytes.try_into().map_err(|_| ReportError::Size {
            expected: REPORT_SIZE,
            found: bytes.len(),
        })?;
        let raw = Box::new(raw);
        let version = u32_at(&raw, offset::VERSION);
        if !(2..=5).contains(&version) {
            return Err(ReportError::Version(version));
        }
        let cpuid = (version >= 3).then(|| Cpuid {
            family: byte_at(&raw, offset::CPUID_FAM_ID),
            model: byte_at(&raw, offset::CPUID_MOD_ID),
            stepping: byte_at(&raw, offset::CPUID_STEP),
        });
        let version_at = |at: usize| FirmwareVersion {
            build: byte_at(&raw, at),
            minor: byte_at(&raw, at + 1),
            major: byte_at(&raw, at + 2),
        };
        let v5 = version >= 5;
        Ok(Self {
            version,
            guest_svn: u32_at(&raw, offset::GUEST_SVN),
            policy: u64_at(&raw, offset::POLICY),
            family_id: arr(&raw, offset::FAMILY_ID),
            image_id: arr(&raw, offset::IMAGE_ID),
            vmpl: u32_at(&raw, offset::VMPL),
            signature_algo: u32_at(&raw, offset::SIGNATURE_ALGO),
            current_tcb: TcbVersion(u64_at(&raw, offset::CURRENT_TCB)),
            platform_info: u64_at(&raw, offset::PLATFORM_INFO),
            key_info: KeyInfo::from_u32(u32_at(&raw, offset::KEY_INFO)),
            report_data: arr(&raw, offset::REPORT_DATA),
            measurement: arr(&raw, offset::MEASUREMENT),
            host_data: arr(&raw, offset::HOST_DATA),
            id_key_digest: arr(&raw, offset::ID_KEY_DIGEST),
            author_key_digest: arr(&raw, offset::AUTHOR_KEY_DIGEST),
            report_id: arr(&raw, offset::REPORT_ID),
            report_id_ma: arr(&raw, offset::REPORT_ID_MA),
            reported_tcb: TcbVersion(u64_at(&raw, offset::REPORTED_TCB)),
            cpuid,
            chip_id: arr(&raw, offset::CHIP_ID),
            committed_tcb: TcbVersion(u64_at(&raw, offset::COMMITTED_TCB)),
            current_version: version_at(offset::CURRENT_VERSION),
            committed_version: version_at(offset::COMMITTED_VERSION),
            launch_tcb: TcbVersion(u64_at(&raw, offset::LAUNCH_TCB)),
            launch_mit_vector: v5.then(|| u64_at(&raw, offset::LAUNCH_MIT_VECTOR)),
            current_mit_vector: v5.then(|| u64_at(&raw, offset::CURRENT_MIT_VECTOR)),
            signature_r: arr(&raw, offset::SIGNATURE),
            signature_s: arr(&raw, offset::SIGNATURE + 72),
            raw,
        })
    }

    /// The bytes as received.
    pub fn raw(&self) -> &[u8; REPORT_SIZE] {
        &self.raw
    }

    /// The signed part of the report, bytes `0..0x2A0`, as received.
    pub fn signed_bytes(&self) -> &[u8] {
        self.raw.get(..SIGNED_SIZE).unwrap_or(&[])
    }

    /// Re-serializes the decoded fields into the ABI layout (reserved fields zero). For a
    /// report without reserved violations this equals the input byte for byte.
    pub fn to_bytes(&self) -> [u8; REPORT_SIZE] {
        let mut out = [0u8; REPORT_SIZE];
        let mut put = |at: usize, bytes: &[u8]| {
            if let Some(dst) = out.get_mut(at..at + bytes.len()) {
                dst.copy_from_slice(bytes);
            }
        };
        put(offset::VERSION, &self.version.to_le_bytes());
        put(offset::GUEST_SVN, &self.guest_svn.to_le_bytes());
        put(offset::POLICY, &self.policy.to_le_bytes());
        put(offset::FAMILY_ID, &self.family_id);
        put(offset::IMAGE_ID, &self.image_id);
        put(offset::VMPL, &self.vmpl.to_le_bytes());
        put(offset::SIGNATURE_ALGO, &self.signature_algo.to_le_bytes());
        put(offset::CURRENT_TCB, &self.current_tcb.0.to_le_bytes());
        put(offset::PLATFORM_INFO, &self.platform_info.to_le_bytes());
        put(offset::KEY_INFO, &self.key_info.to_u32().to_le_bytes());
        put(offset::REPORT_DATA, &self.report_data);
        put(offset::MEASUREMENT, &self.measurement);
        put(offset::HOST_DATA, &self.host_data);
        put(offset::ID_KEY_DIGEST, &self.id_key_digest);
        put(offset::AUTHOR_KEY_DIGEST, &self.author_key_digest);
        put(offset::REPORT_ID, &self.report_id);
        put(offset::REPORT_ID_MA, &self.report_id_ma);
        put(offset::REPORTED_TCB, &self.reported_tcb.0.to_le_bytes());
        if let Some(c) = self.cpuid {
            put(offset::CPUID_FAM_ID, &[c.family, c.model, c.stepping]);
        }
        put(offset::CHIP_ID, &self.chip_id);
        put(offset::COMMITTED_TCB, &self.committed_tcb.0.to_le_bytes());
        let v = self.current_version;
        put(offset::CURRENT_VERSION, &[v.build, v.minor, v.major]);
        let v = self.committed_version;
        put(offset::COMMITTED_VERSION, &[v.build, v.minor, v.major]);
        put(offset::LAUNCH_TCB, &self.launch_tcb.0.to_le_bytes());
        if let Some(m) = self.launch_mit_vector {
            put(offset::LAUNCH_MIT_VECTOR, &m.to_le_bytes());
        }
        if let Some(m) = self.current_mit_vector {
            put(offset::CURRENT_MIT_VECTOR, &m.to_le_bytes());
        }
        put(offset::SIGNATURE, &self.signature_r);
        put(offset::SIGNATURE + 72, &self.signature_s);
        out
    }

    /// Every reserved range or reserved bit that is not as the ABI requires: bytes
    /// 0x4C..0x50, 0x188 (0x18B from version 3)..0x1A0, 0x1EB, 0x1EF, 0x1F8 (0x208 from
    /// version 5)..0x2A0, the signature field after R and S (0x330..0x4A0), KEY_INFO bits
    /// 31:5, and guest POLICY bit 17 (must be one) and bits 63:26 (must be zero).
    pub fn reserved_violations(&self) -> Vec<ReservedViolation> {
        let mut out = Vec::new();
        let mut zero_range = |start: usize, end: usize| {
            let bytes = self.raw.get(start..end).unwrap_or(&[]);
            if bytes.iter().any(|&b| b != 0) {
                out.push(ReservedViolation {
                    field: format!("bytes {start:#x}..{end:#x}"),
                    expected: "all zero".into(),
                    found: hex::encode(bytes),
                });
            }
        };
        zero_range(0x4C, 0x50);
        zero_range(if self.version >= 3 { 0x18B } else { 0x188 }, 0x1A0);
        zero_range(0x1EB, 0x1EC);
        zero_range(0x1EF, 0x1F0);
        zero_range(if self.version >= 5 { 0x208 } else { 0x1F8 }, SIGNED_SIZE);
        zero_range(SIGNED_SIZE + 144, REPORT_SIZE);
        if self.key_info.reserved != 0 {
            out.push(ReservedViolation {
                field: "KEY_INFO bits 31:5".into(),
                expected: "0".into(),
                found: format!("{:#x}", self.key_info.reserved),
            });
        }
        if self.policy & (1 << 17) == 0 {
            out.push(ReservedViolation {
                field: "POLICY bit 17".into(),
                expected: "1".into(),
                found: "0".into(),
            });
        }
        if self.policy >> 26 != 0 {
            out.push(ReservedViolation {
                field: "POLICY bits 63:26".into(),
                expected: "0".into(),
                found: format!("{:#x}", self.policy >> 26),
            });
        }
        out
    }

    /// The processor generation named by the CPUID fields (version 3 and later), or `None`
    /// when the report cannot tell (version 2) or names an unknown processor.
    pub fn cpuid_generation(&self) -> Option<Generation> {
        self.cpuid
            .and_then(|c| Generation::from_cpuid(c.family, c.model))
    }

    /// True when CHIP_ID is all zero (MaskChipId set on the platform).
    pub fn chip_id_masked(&self) -> bool {
        self.chip_id.iter().all(|&b| b == 0)
    }

    /// The ECDSA signature as ring's fixed format: R then S, 48 bytes each, big-endian. The
    /// upper 24 bytes of each 72-byte little-endian field must be zero.
    pub fn signature_p384_fixed(&self) -> Result<[u8; 96], ReportError> {
        let mut out = [0u8; 96];
        for (field, dst) in [&self.signature_r, &self.signature_s]
            .into_iter()
            .zip(out.chunks_exact_mut(48))
        {
            if field.get(48..).unwrap_or(&[]).iter().any(|&b| b != 0) {
                return Err(ReportError::Signature(
                    "a 72-byte R or S value does not fit in 48 bytes (upper bytes not zero)",
                ));
            }
            for (d, s) in dst.iter_mut().zip(field.iter().take(48).rev()) {
                *d = *s;
            }
        }
        Ok(out)
    }

    /// Guest POLICY, decoded.
    pub fn guest_policy(&self) -> GuestPolicy {
        GuestPolicy(self.policy)
    }
}

/// The guest policy bits (ABI specification, "Guest Policy" table).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GuestPolicy(pub u64);

impl GuestPolicy {
    fn bit(self, n: u32) -> bool {
        self.0 & (1u64 << n) != 0
    }
    /// ABI_MINOR (bits 7:0).
    pub fn abi_minor(self) -> u8 {
        (self.0 & 0xff) as u8
    }
    /// ABI_MAJOR (bits 15:8).
    pub fn abi_major(self) -> u8 {
        ((self.0 >> 8) & 0xff) as u8
    }
    /// SMT (bit 16): SMT is allowed.
    pub fn smt_allowed(self) -> bool {
        self.bit(16)
    }
    /// MIGRATE_MA (bit 18): association with a migration agent is allowed.
    pub fn migrate_ma_allowed(self) -> bool {
        self.bit(18)
    }
    /// DEBUG (bit 19): debugging is allowed.
    pub fn debug_allowed(self) -> bool {
        self.bit(19)
    }
    /// SINGLE_SOCKET (bit 20): the guest can be activated on one socket only.
    pub fn single_socket_required(self) -> bool {
        self.bit(20)
    }
    /// CXL_ALLOW (bit 21): CXL may be populated with devices or memory.
    pub fn cxl_allowed(self) -> bool {
        self.bit(21)
    }
    /// MEM_AES_256_XTS (bit 22): AES-256-XTS is required for memory encryption.
    pub fn mem_aes_256_xts_required(self) -> bool {
        self.bit(22)
    }
    /// RAPL_DIS (bit 23): Running Average Power Limit must be disabled.
    pub fn rapl_disabled_required(self) -> bool {
        self.bit(23)
    }
    /// CIPHERTEXT_HIDING_DRAM (bit 24): ciphertext hiding for DRAM must be enabled.
    pub fn ciphertext_hiding_required(self) -> bool {
        self.bit(24)
    }
    /// PAGE_SWAP_DISABLE (bit 25): guest page swap commands are disabled.
    pub fn page_swap_disabled(self) -> bool {
        self.bit(25)
    }
}

/// PLATFORM_INFO bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlatformInfo(pub u64);

impl PlatformInfo {
    fn bit(self, n: u32) -> bool {
        self.0 & (1u64 << n) != 0
    }
    /// SMT_EN (bit 0).
    pub fn smt_enabled(self) -> bool {
        self.bit(0)
    }
    /// TSME_EN (bit 1).
    pub fn tsme_enabled(self) -> bool {
        self.bit(1)
    }
    /// ECC_EN (bit 2).
    pub fn ecc_enabled(self) -> bool {
        self.bit(2)
    }
    /// RAPL_DIS (bit 3).
    pub fn rapl_disabled(self) -> bool {
        self.bit(3)
    }
    /// CIPHERTEXT_HIDING_DRAM_EN (bit 4).
    pub fn ciphertext_hiding_enabled(self) -> bool {
        self.bit(4)
    }
    /// ALIAS_CHECK_COMPLETE (bit 5).
    pub fn alias_check_complete(self) -> bool {
        self.bit(5)
    }
}

#[cfg(test)]
mod tests;
