//! The launch-time side of the tenant policy (the memory-encryption policy): what
//! `cloister run --policy FILE` derives from the file `cloister verify` reads, and what it
//! refuses before the VM exists.
//!
//! - [`Policy::guest_policy_bits`]: the SNP guest policy (SNP-FACTS §5.2) to launch with,
//!   derived so that the report's POLICY passes the same file's checks.
//! - [`Policy::check_launch`]: applies every launch rule to a [`LaunchDescription`]; a
//!   launch the policy forbids is refused with a [`LaunchRefusal`] that names the rule
//!   (the TOML key), what was asked and why.
//! - [`Policy::allows_conversion_to_shared`]: the one rule the monitor applies at run time,
//!   on the guest's page conversions.
//!
//! `docs/launch-policy.md` has one row per rule: key, default, what `run` does, what
//! `verify` checks.

use std::fmt;

use crate::file::{MajorMinor, Policy};

/// Guest-policy bits (firmware ABI "Guest Policy", SNP-FACTS §5.2).
mod bit {
    /// ABI_MINOR (7:0) and ABI_MAJOR (15:8): the lowest firmware ABI the guest accepts.
    pub const ABI: u64 = 0xffff;
    /// SMT allowed.
    pub const SMT: u64 = 1 << 16;
    /// Reserved, must be one.
    pub const RSVD_MBO: u64 = 1 << 17;
    /// Association with a migration agent allowed.
    pub const MIGRATE_MA: u64 = 1 << 18;
    /// Debugging allowed.
    pub const DEBUG: u64 = 1 << 19;
    /// The guest may be activated on one socket only.
    pub const SINGLE_SOCKET: u64 = 1 << 20;
    /// CXL may be populated with devices or memory.
    pub const CXL_ALLOW: u64 = 1 << 21;
    /// AES-256-XTS required for memory encryption.
    pub const MEM_AES_256_XTS: u64 = 1 << 22;
    /// Running Average Power Limit must be disabled.
    pub const RAPL_DIS: u64 = 1 << 23;
    /// Ciphertext hiding for DRAM must be enabled.
    pub const CIPHERTEXT_HIDING: u64 = 1 << 24;
    /// Guest page swap commands disabled.
    pub const PAGE_SWAP_DISABLE: u64 = 1 << 25;
}

/// The bits KVM accepts at SNP_LAUNCH_START without `KVM_X86_SNP_POLICY_BITS` (Linux
/// 6.11-6.18, SNP-FACTS §1.6): ABI, SMT, bit 17, DEBUG, SINGLE_SOCKET (then refused).
const FIXED_RULE_BITS: u64 = bit::ABI | bit::SMT | bit::RSVD_MBO | bit::DEBUG | bit::SINGLE_SOCKET;

/// Which key of the policy sets which guest-policy bits, and the bits' names.
const BIT_KEYS: [(u64, &str, &str); 9] = [
    (bit::ABI, "abi_minimum", "ABI_MAJOR.ABI_MINOR (bits 15:0)"),
    (bit::SMT, "allow_smt", "SMT (bit 16)"),
    (
        bit::MIGRATE_MA,
        "allow_migration_agent",
        "MIGRATE_MA (bit 18)",
    ),
    (bit::DEBUG, "allow_debug", "DEBUG (bit 19)"),
    (bit::CXL_ALLOW, "allow_cxl", "CXL_ALLOW (bit 21)"),
    (
        bit::MEM_AES_256_XTS,
        "require_mem_aes_256_xts",
        "MEM_AES_256_XTS (bit 22)",
    ),
    (bit::RAPL_DIS, "require_rapl_disabled", "RAPL_DIS (bit 23)"),
    (
        bit::CIPHERTEXT_HIDING,
        "require_ciphertext_hiding",
        "CIPHERTEXT_HIDING_DRAM (bit 24)",
    ),
    (
        bit::PAGE_SWAP_DISABLE,
        "require_page_swap_disabled",
        "PAGE_SWAP_DISABLE (bit 25)",
    ),
];

/// Where the guest is to run (`cloister run --platform`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LaunchPlatform {
    /// Plain KVM: no memory encryption, no guest policy, no report.
    None,
    /// The simulated SNP platform: the SNP launch protocol over a plain KVM guest; no
    /// memory is encrypted and reports are signed by the Cloister simulation root.
    Sim,
    /// SEV-SNP on the real kernel API and AMD secure processor.
    Snp,
}

impl LaunchPlatform {
    /// True for the platforms that launch an SEV-SNP guest (with a guest policy).
    fn is_snp_guest(self) -> bool {
        matches!(self, Self::Sim | Self::Snp)
    }
}

impl fmt::Display for LaunchPlatform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::None => "none",
            Self::Sim => "sim",
            Self::Snp => "snp",
        })
    }
}

/// Which guest policies this host's KVM takes at SNP_LAUNCH_START (SNP-FACTS §1.6; the
/// monitor's `snp::kvm::kvm_accepts_policy` applies the same rule to the final value).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KvmPolicyRule {
    /// Linux 6.11-6.18, without `KVM_X86_SNP_POLICY_BITS`: only ABI, SMT, bit 17, DEBUG
    /// and SINGLE_SOCKET may be set; bits 16 (SMT) and 17 must be set; SINGLE_SOCKET is
    /// refused. The simulated platform models this rule.
    Fixed,
    /// Linux 6.19 and later: the bits `KVM_X86_SNP_POLICY_BITS` reports may be set (bit 17
    /// must be); SINGLE_SOCKET is still refused.
    Bits(u64),
}

impl KvmPolicyRule {
    /// The rule for the value of `KVM_X86_SNP_POLICY_BITS`, absent on Linux 6.11-6.18.
    pub fn from_policy_bits(policy_bits: Option<u64>) -> Self {
        policy_bits.map_or(Self::Fixed, Self::Bits)
    }

    /// The guest-policy bits KVM lets through (SINGLE_SOCKET aside, refused anyway).
    pub fn accepted_bits(self) -> u64 {
        match self {
            Self::Fixed => FIXED_RULE_BITS,
            Self::Bits(bits) => bits,
        }
    }
}

impl fmt::Display for KvmPolicyRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Fixed => write!(
                f,
                "Linux 6.11-6.18 without KVM_X86_SNP_POLICY_BITS: guest-policy bits {FIXED_RULE_BITS:#x} only, SMT required"
            ),
            Self::Bits(bits) => write!(f, "KVM_X86_SNP_POLICY_BITS = {bits:#x}"),
        }
    }
}

/// One virtio device the launch would give the guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VirtioDeviceInfo {
    /// How refusals name it (e.g. "virtio-blk 0 (disk.img)").
    pub name: String,
    /// The device offers VIRTIO_F_ACCESS_PLATFORM (feature bit 33).
    pub offers_access_platform: bool,
}

/// A launch as `cloister run` would make it: the platform, what the host offers and what
/// the launch asks for. Built by the monitor before the VM exists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaunchDescription {
    /// Where the guest runs.
    pub platform: LaunchPlatform,
    /// Number of vCPUs (no rule reads it today; it belongs to what is launched).
    pub vcpus: u32,
    /// Whether the host's SMT is active (`/sys/devices/system/cpu/smt/active`); `None`
    /// when unknown, in which case the firmware enforces an SMT-forbidding policy at
    /// LAUNCH_START (POLICY_FAILURE).
    pub host_smt_active: Option<bool>,
    /// The firmware's ABI version (major, minor) when known (SEV platform status; the
    /// simulated firmware's `SIM_FIRMWARE`); `None`: the firmware enforces `abi_minimum`.
    pub firmware_abi: Option<(u8, u8)>,
    /// Every virtio device of the launch.
    pub virtio_devices: Vec<VirtioDeviceInfo>,
    /// The guest policies this host's KVM accepts (ignored on `none`).
    pub kvm_policy_rule: KvmPolicyRule,
    /// The launch asks for a debuggable guest.
    pub request_debug: bool,
    /// The launch asks for association with a migration agent.
    pub request_migration_agent: bool,
}

/// Why an SMT-forbidding policy cannot be launched here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtConflict {
    /// KVM's rule ([`KvmPolicyRule::Fixed`]) requires guest-policy bit 16.
    KvmRequiresSmt,
    /// The host runs with SMT active.
    HostSmtActive,
}

/// A launch the policy forbids: one variant per rule. `Display` reads
/// "policy rule `<key>`: `<what was asked>` is not allowed (`<why>`)".
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LaunchRefusal {
    /// `launch.require_snp`: a `none` launch.
    RequireSnp,
    /// `launch.allow_simulation`: a `sim` launch.
    AllowSimulation,
    /// `allow_debug`: the launch asks for a debuggable guest.
    AllowDebug,
    /// `allow_migration_agent`: the launch asks for a migration agent.
    AllowMigrationAgent,
    /// `allow_smt`: the policy forbids SMT and this host cannot honour that.
    AllowSmt(SmtConflict),
    /// `abi_minimum`: the policy's minimum ABI is above the firmware's.
    AbiMinimum {
        /// The policy's minimum.
        minimum: MajorMinor,
        /// The firmware's ABI.
        firmware: MajorMinor,
    },
    /// `require_single_socket`: KVM refuses SINGLE_SOCKET.
    RequireSingleSocket {
        /// This host's KVM rule.
        kvm: KvmPolicyRule,
    },
    /// The guest policy the file asks for has bits this host's KVM does not accept; `key`
    /// is the key that asks for them.
    KvmPolicyBits {
        /// The policy key that sets the bits.
        key: &'static str,
        /// The bits' names.
        field: &'static str,
        /// The bits KVM does not accept.
        bits: u64,
        /// This host's KVM rule.
        kvm: KvmPolicyRule,
    },
    /// `virtio_access_platform` (fixed, no key): a virtio device without
    /// VIRTIO_F_ACCESS_PLATFORM on an SNP guest.
    VirtioAccessPlatform {
        /// The device.
        device: String,
    },
    /// `launch.allow_shared_memory`: virtio devices while the policy forbids shared
    /// memory.
    AllowSharedMemory {
        /// The devices.
        devices: Vec<String>,
    },
}

impl LaunchRefusal {
    /// The rule: the TOML key (dotted for the `[launch]` table), or
    /// `virtio_access_platform` for the one rule without a key.
    pub fn rule(&self) -> &'static str {
        match self {
            Self::RequireSnp => "launch.require_snp",
            Self::AllowSimulation => "launch.allow_simulation",
            Self::AllowDebug => "allow_debug",
            Self::AllowMigrationAgent => "allow_migration_agent",
            Self::AllowSmt(_) => "allow_smt",
            Self::AbiMinimum { .. } => "abi_minimum",
            Self::RequireSingleSocket { .. } => "require_single_socket",
            Self::KvmPolicyBits { key, .. } => key,
            Self::VirtioAccessPlatform { .. } => "virtio_access_platform",
            Self::AllowSharedMemory { .. } => "launch.allow_shared_memory",
        }
    }

    /// What the launch asked for.
    fn asked(&self) -> String {
        match self {
            Self::RequireSnp => {
                "a launch on platform `none` (plain KVM: the host can read and write guest memory)"
                    .into()
            }
            Self::AllowSimulation => "a launch on the simulated platform `sim`".into(),
            Self::AllowDebug => "a debuggable guest (guest policy DEBUG, bit 19)".into(),
            Self::AllowMigrationAgent => {
                "a guest associated with a migration agent (guest policy MIGRATE_MA, bit 18)".into()
            }
            Self::AllowSmt(SmtConflict::KvmRequiresSmt) => {
                "an SEV-SNP guest with SMT forbidden (guest policy bit 16 clear)".into()
            }
            Self::AllowSmt(SmtConflict::HostSmtActive) => {
                "an SEV-SNP guest with SMT forbidden, on a host with SMT active".into()
            }
            Self::AbiMinimum { minimum, .. } => {
                format!("a guest policy requiring firmware ABI {minimum} or later")
            }
            Self::RequireSingleSocket { .. } => "a guest policy with SINGLE_SOCKET (bit 20)".into(),
            Self::KvmPolicyBits { field, bits, .. } => {
                format!("a guest policy with {field} (bits {bits:#x})")
            }
            Self::VirtioAccessPlatform { device } => format!(
                "virtio device `{device}` without VIRTIO_F_ACCESS_PLATFORM (feature bit 33)"
            ),
            Self::AllowSharedMemory { devices } => format!(
                "virtio devices ({}) on an SEV-SNP guest",
                devices.join(", ")
            ),
        }
    }

    /// Why it is refused, and how to get past it where there is a way.
    fn why(&self) -> String {
        match self {
            Self::RequireSnp => "the policy requires an SEV-SNP launch; `launch.require_snp = false` allows plain KVM".into(),
            Self::AllowSimulation => "a simulated launch encrypts no memory and its report is signed by the Cloister simulation root, not AMD; a policy opts in with `launch.allow_simulation = true`".into(),
            Self::AllowDebug => "the policy forbids debugging: the host could read and write a debuggable guest's memory".into(),
            Self::AllowMigrationAgent => "the policy forbids a migration agent: it could move the guest's memory off this platform".into(),
            Self::AllowSmt(SmtConflict::KvmRequiresSmt) => format!(
                "this host's KVM cannot launch an SMT-forbidden guest: {} requires bit 16; use Linux 6.19 or later, or `allow_smt = true`",
                KvmPolicyRule::Fixed
            ),
            Self::AllowSmt(SmtConflict::HostSmtActive) => "the policy forbids SMT and the firmware refuses such a guest while SMT is on; turn SMT off (/sys/devices/system/cpu/smt/control) or set `allow_smt = true`".into(),
            Self::AbiMinimum { firmware, .. } => format!(
                "this platform's firmware implements ABI {firmware} and would refuse LAUNCH_START"
            ),
            Self::RequireSingleSocket { kvm } => format!(
                "KVM refuses SINGLE_SOCKET at SNP_LAUNCH_START on every version ({kvm}): it cannot keep a guest on one socket"
            ),
            Self::KvmPolicyBits { kvm, .. } => format!(
                "this host's KVM does not accept these bits ({kvm})"
            ),
            Self::VirtioAccessPlatform { .. } => "an SEV-SNP guest does not probe a virtio device without it: its DMA must go through shared bounce buffers; every SNP launch follows this rule, it has no key".into(),
            Self::AllowSharedMemory { .. } => "the policy forbids converting guest pages to shared (`launch.allow_shared_memory = false`), and virtio DMA needs shared bounce buffers".into(),
        }
    }
}

impl fmt::Display for LaunchRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "policy rule `{}`: {} is not allowed ({})",
            self.rule(),
            self.asked(),
            self.why()
        )
    }
}

impl std::error::Error for LaunchRefusal {}

impl Policy {
    /// The SNP guest policy (SNP-FACTS §5.2) this policy launches with: ABI_MAJOR.ABI_MINOR
    /// from `abi_minimum` (0.0 when absent), SMT (16) from `allow_smt`, bit 17 always,
    /// MIGRATE_MA (18) from `allow_migration_agent`, DEBUG (19) from `allow_debug`,
    /// SINGLE_SOCKET (20) from `require_single_socket`, CXL_ALLOW (21) from `allow_cxl`,
    /// MEM_AES_256_XTS (22), RAPL_DIS (23), CIPHERTEXT_HIDING_DRAM (24) and
    /// PAGE_SWAP_DISABLE (25) from the matching `require_*` keys. A report of a guest
    /// launched with it passes the same file's guest-policy checks. The default policy
    /// gives 0x30000.
    pub fn guest_policy_bits(&self) -> u64 {
        let abi = self
            .abi_minimum
            .map_or(0, |v| u64::from(v.major) << 8 | u64::from(v.minor));
        let flags = [
            (self.allow_smt, bit::SMT),
            (true, bit::RSVD_MBO),
            (self.allow_migration_agent, bit::MIGRATE_MA),
            (self.allow_debug, bit::DEBUG),
            (self.require_single_socket, bit::SINGLE_SOCKET),
            (self.allow_cxl, bit::CXL_ALLOW),
            (self.require_mem_aes_256_xts, bit::MEM_AES_256_XTS),
            (self.require_rapl_disabled, bit::RAPL_DIS),
            (self.require_ciphertext_hiding, bit::CIPHERTEXT_HIDING),
            (self.require_page_swap_disabled, bit::PAGE_SWAP_DISABLE),
        ];
        flags
            .iter()
            .filter(|(on, _)| *on)
            .fold(abi, |acc, (_, b)| acc | b)
    }

    /// Applies every launch rule (`docs/launch-policy.md`) to `launch`, before the VM
    /// exists. Returns the guest policy to launch with ([`Self::guest_policy_bits`]; on
    /// `none`, which has no guest policy, the value is only informative), or the first
    /// rule the launch breaks.
    ///
    /// On every platform: `launch.require_snp` (refuses `none`), `launch.allow_simulation`
    /// (refuses `sim` unless set), `allow_debug` and `allow_migration_agent` (refuse a
    /// request for them). On `sim` and `snp` also: `allow_smt` (KVM's rule or the host's
    /// SMT), `abi_minimum` (above the firmware's ABI), `require_single_socket`, the bits
    /// KVM accepts (naming the key that asks for a refused bit), VIRTIO_F_ACCESS_PLATFORM
    /// on every virtio device, and `launch.allow_shared_memory` (no virtio device when
    /// false).
    pub fn check_launch(&self, launch: &LaunchDescription) -> Result<u64, LaunchRefusal> {
        let policy = self.guest_policy_bits();
        match launch.platform {
            LaunchPlatform::None if self.launch.require_snp => {
                return Err(LaunchRefusal::RequireSnp)
            }
            LaunchPlatform::Sim if !self.launch.allow_simulation => {
                return Err(LaunchRefusal::AllowSimulation)
            }
            _ => {}
        }
        if launch.request_debug && !self.allow_debug {
            return Err(LaunchRefusal::AllowDebug);
        }
        if launch.request_migration_agent && !self.allow_migration_agent {
            return Err(LaunchRefusal::AllowMigrationAgent);
        }
        if !launch.platform.is_snp_guest() {
            return Ok(policy);
        }

        let kvm = launch.kvm_policy_rule;
        if !self.allow_smt {
            if kvm == KvmPolicyRule::Fixed {
                return Err(LaunchRefusal::AllowSmt(SmtConflict::KvmRequiresSmt));
            }
            if launch.host_smt_active == Some(true) {
                return Err(LaunchRefusal::AllowSmt(SmtConflict::HostSmtActive));
            }
        }
        if let (Some(minimum), Some((major, minor))) = (self.abi_minimum, launch.firmware_abi) {
            let firmware = MajorMinor { major, minor };
            if minimum > firmware {
                return Err(LaunchRefusal::AbiMinimum { minimum, firmware });
            }
        }
        if self.require_single_socket {
            return Err(LaunchRefusal::RequireSingleSocket { kvm });
        }
        let refused = policy & !kvm.accepted_bits() & !bit::RSVD_MBO;
        if let Some(&(mask, key, field)) = BIT_KEYS.iter().find(|(m, _, _)| refused & m != 0) {
            return Err(LaunchRefusal::KvmPolicyBits {
                key,
                field,
                bits: refused & mask,
                kvm,
            });
        }
        if let Some(dev) = launch
            .virtio_devices
            .iter()
            .find(|d| !d.offers_access_platform)
        {
            return Err(LaunchRefusal::VirtioAccessPlatform {
                device: dev.name.clone(),
            });
        }
        if !self.launch.allow_shared_memory && !launch.virtio_devices.is_empty() {
            return Err(LaunchRefusal::AllowSharedMemory {
                devices: launch
                    .virtio_devices
                    .iter()
                    .map(|d| d.name.clone())
                    .collect(),
            });
        }
        Ok(policy)
    }

    /// The run-time rule for the guest's page conversions (`launch.allow_shared_memory`):
    /// whether the monitor may convert guest pages from private to shared when the guest
    /// asks (a KVM_HC_MAP_GPA_RANGE exit with the private attribute clear, or a memory
    /// fault asking for shared). When false, the monitor refuses the conversion
    /// (`hypercall.ret` non-zero, so KVM reports a failed page-state change to the guest).
    /// Conversions to private are always allowed.
    pub fn allows_conversion_to_shared(&self) -> bool {
        self.launch.allow_shared_memory
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    fn policy(toml: &str) -> Policy {
        Policy::from_toml(toml, "test.toml").unwrap()
    }

    /// A launch every rule accepts under the default policy plus `allow_simulation`.
    fn good(platform: LaunchPlatform) -> LaunchDescription {
        LaunchDescription {
            platform,
            vcpus: 2,
            host_smt_active: Some(true),
            firmware_abi: Some((1, 55)),
            virtio_devices: vec![VirtioDeviceInfo {
                name: "virtio-blk 0 (disk.img)".into(),
                offers_access_platform: true,
            }],
            kvm_policy_rule: KvmPolicyRule::Fixed,
            request_debug: false,
            request_migration_agent: false,
        }
    }

    fn refused(p: &Policy, d: &LaunchDescription) -> LaunchRefusal {
        p.check_launch(d).unwrap_err()
    }

    /// The refusal names its rule in the agreed form, with what was asked and why.
    fn assert_names(r: &LaunchRefusal, rule: &str, asked: &str, why: &str) {
        let text = r.to_string();
        assert_eq!(r.rule(), rule);
        assert!(
            text.starts_with(&format!("policy rule `{rule}`: ")),
            "{text}"
        );
        assert!(text.contains(" is not allowed ("), "{text}");
        assert!(text.ends_with(')'), "{text}");
        assert!(text.contains(asked), "{asked:?} not in {text}");
        assert!(text.contains(why), "{why:?} not in {text}");
    }

    #[test]
    fn guest_policy_bits_follow_the_keys() {
        assert_eq!(Policy::default().guest_policy_bits(), 0x3_0000);
        assert_eq!(policy("allow_smt = false").guest_policy_bits(), 0x2_0000);
        assert_eq!(
            policy("abi_minimum = \"1.55\"").guest_policy_bits(),
            0x3_0000 | 1 << 8 | 55
        );
        for (key, bit) in [
            ("allow_migration_agent", 18),
            ("allow_debug", 19),
            ("require_single_socket", 20),
            ("allow_cxl", 21),
            ("require_mem_aes_256_xts", 22),
            ("require_rapl_disabled", 23),
            ("require_ciphertext_hiding", 24),
            ("require_page_swap_disabled", 25),
        ] {
            assert_eq!(
                policy(&format!("{key} = true")).guest_policy_bits(),
                0x3_0000 | 1 << bit,
                "{key}"
            );
        }
    }

    #[test]
    fn a_policy_launched_with_its_own_bits_passes_its_own_guest_policy_checks() {
        use cloister_attestation::report::GuestPolicy;
        let p = policy(
            "abi_minimum = \"1.51\"\nallow_debug = true\nrequire_rapl_disabled = true\nallow_smt = false",
        );
        let g = GuestPolicy(p.guest_policy_bits());
        assert_eq!((g.abi_major(), g.abi_minor()), (1, 51));
        assert!(g.debug_allowed() && g.rapl_disabled_required());
        assert!(!g.smt_allowed() && !g.migrate_ma_allowed() && !g.cxl_allowed());
    }

    #[test]
    fn good_launches_are_accepted_with_the_guest_policy() {
        let sim_ok = policy("[launch]\nallow_simulation = true");
        assert_eq!(
            sim_ok.check_launch(&good(LaunchPlatform::Sim)),
            Ok(0x3_0000)
        );
        assert_eq!(
            Policy::default().check_launch(&good(LaunchPlatform::Snp)),
            Ok(0x3_0000)
        );
        let bits = LaunchDescription {
            kvm_policy_rule: KvmPolicyRule::Bits(0x1b_ffff),
            ..good(LaunchPlatform::Snp)
        };
        assert_eq!(Policy::default().check_launch(&bits), Ok(0x3_0000));
        let plain = policy("launch.require_snp = false");
        assert_eq!(
            plain.check_launch(&good(LaunchPlatform::None)),
            Ok(0x3_0000)
        );
        // Debug and migration agent, asked for and allowed (6.19 rule with bit 18).
        let dbg = policy("allow_debug = true\nallow_migration_agent = true");
        let asks = LaunchDescription {
            request_debug: true,
            request_migration_agent: true,
            kvm_policy_rule: KvmPolicyRule::Bits(0x1f_ffff),
            ..good(LaunchPlatform::Snp)
        };
        assert_eq!(dbg.check_launch(&asks), Ok(0x3_0000 | 1 << 18 | 1 << 19));
        // SMT forbidden on a 6.19 host with SMT off, or unknown (the firmware decides).
        let no_smt = policy("allow_smt = false");
        for smt in [Some(false), None] {
            let d = LaunchDescription {
                host_smt_active: smt,
                kvm_policy_rule: KvmPolicyRule::Bits(0x1b_ffff),
                ..good(LaunchPlatform::Snp)
            };
            assert_eq!(no_smt.check_launch(&d), Ok(0x2_0000));
        }
        // ABI minimum equal to the firmware's, or the firmware's unknown.
        let abi = policy("abi_minimum = \"1.55\"");
        assert!(abi.check_launch(&good(LaunchPlatform::Snp)).is_ok());
        let unknown = LaunchDescription {
            firmware_abi: None,
            ..good(LaunchPlatform::Snp)
        };
        assert!(policy("abi_minimum = \"9.0\"")
            .check_launch(&unknown)
            .is_ok());
        // No virtio device: shared memory may be forbidden.
        let no_share = policy("[launch]\nallow_shared_memory = false");
        let no_dev = LaunchDescription {
            virtio_devices: vec![],
            ..good(LaunchPlatform::Snp)
        };
        assert_eq!(no_share.check_launch(&no_dev), Ok(0x3_0000));
        assert!(!no_share.allows_conversion_to_shared());
        assert!(Policy::default().allows_conversion_to_shared());
    }

    #[test]
    fn require_snp_refuses_none_by_default() {
        let r = refused(&Policy::default(), &good(LaunchPlatform::None));
        assert_eq!(r, LaunchRefusal::RequireSnp);
        assert_names(
            &r,
            "launch.require_snp",
            "platform `none`",
            "requires an SEV-SNP launch",
        );
    }

    #[test]
    fn allow_simulation_must_be_set_for_sim() {
        for p in [Policy::default(), policy("launch.require_snp = false")] {
            let r = refused(&p, &good(LaunchPlatform::Sim));
            assert_eq!(r, LaunchRefusal::AllowSimulation);
            assert_names(
                &r,
                "launch.allow_simulation",
                "simulated platform `sim`",
                "encrypts no memory",
            );
        }
    }

    #[test]
    fn debug_and_migration_agent_requests_are_refused_when_forbidden() {
        for platform in [LaunchPlatform::Snp, LaunchPlatform::None] {
            let p = policy("launch.require_snp = false");
            let d = LaunchDescription {
                request_debug: true,
                ..good(platform)
            };
            let r = refused(&p, &d);
            assert_eq!(r, LaunchRefusal::AllowDebug);
            assert_names(&r, "allow_debug", "debuggable guest", "forbids debugging");
            let d = LaunchDescription {
                request_migration_agent: true,
                ..good(platform)
            };
            let r = refused(&p, &d);
            assert_eq!(r, LaunchRefusal::AllowMigrationAgent);
            assert_names(
                &r,
                "allow_migration_agent",
                "MIGRATE_MA, bit 18",
                "forbids a migration agent",
            );
        }
    }

    #[test]
    fn smt_forbidden_needs_a_kvm_that_allows_it_and_a_host_without_smt() {
        let p = policy("allow_smt = false");
        let r = refused(&p, &good(LaunchPlatform::Snp));
        assert_eq!(r, LaunchRefusal::AllowSmt(SmtConflict::KvmRequiresSmt));
        assert_names(
            &r,
            "allow_smt",
            "SMT forbidden",
            "this host's KVM cannot launch an SMT-forbidden guest",
        );
        let d = LaunchDescription {
            kvm_policy_rule: KvmPolicyRule::Bits(0x1b_ffff),
            ..good(LaunchPlatform::Snp)
        };
        let r = refused(&p, &d);
        assert_eq!(r, LaunchRefusal::AllowSmt(SmtConflict::HostSmtActive));
        assert_names(&r, "allow_smt", "SMT active", "turn SMT off");
    }

    #[test]
    fn abi_minimum_above_the_firmware_is_refused() {
        let p = policy("abi_minimum = \"1.56\"");
        let r = refused(&p, &good(LaunchPlatform::Snp));
        assert_eq!(
            r,
            LaunchRefusal::AbiMinimum {
                minimum: MajorMinor {
                    major: 1,
                    minor: 56
                },
                firmware: MajorMinor {
                    major: 1,
                    minor: 55
                },
            }
        );
        assert_names(
            &r,
            "abi_minimum",
            "ABI 1.56 or later",
            "implements ABI 1.55",
        );
        // 2.0 is above 1.55 too (major first).
        assert!(policy("abi_minimum = \"2.0\"")
            .check_launch(&good(LaunchPlatform::Snp))
            .is_err());
    }

    #[test]
    fn single_socket_is_refused_under_both_kvm_rules() {
        let p = policy("require_single_socket = true");
        for kvm in [KvmPolicyRule::Fixed, KvmPolicyRule::Bits(0x1b_ffff)] {
            let d = LaunchDescription {
                kvm_policy_rule: kvm,
                ..good(LaunchPlatform::Snp)
            };
            let r = refused(&p, &d);
            assert_eq!(r, LaunchRefusal::RequireSingleSocket { kvm });
            assert_names(
                &r,
                "require_single_socket",
                "SINGLE_SOCKET (bit 20)",
                "KVM refuses SINGLE_SOCKET",
            );
        }
    }

    #[test]
    fn bits_this_kvm_does_not_accept_name_the_key_that_asks_for_them() {
        for (key, bit, field) in [
            ("allow_migration_agent", 18, "MIGRATE_MA"),
            ("allow_cxl", 21, "CXL_ALLOW"),
            ("require_mem_aes_256_xts", 22, "MEM_AES_256_XTS"),
            ("require_rapl_disabled", 23, "RAPL_DIS"),
            ("require_ciphertext_hiding", 24, "CIPHERTEXT_HIDING_DRAM"),
            ("require_page_swap_disabled", 25, "PAGE_SWAP_DISABLE"),
        ] {
            let p = policy(&format!("{key} = true"));
            let r = refused(&p, &good(LaunchPlatform::Snp));
            assert_eq!(
                r,
                LaunchRefusal::KvmPolicyBits {
                    key,
                    field: BIT_KEYS.iter().find(|k| k.1 == key).unwrap().2,
                    bits: 1 << bit,
                    kvm: KvmPolicyRule::Fixed
                }
            );
            assert_names(&r, key, field, "Linux 6.11-6.18");
            // A 6.19 KVM that lists the bit takes it.
            let d = LaunchDescription {
                kvm_policy_rule: KvmPolicyRule::Bits(0x1b_ffff | 1 << bit),
                ..good(LaunchPlatform::Snp)
            };
            assert_eq!(p.check_launch(&d), Ok(0x3_0000 | 1 << bit));
        }
        // Debug allowed (not asked for) on a KVM that does not list bit 19.
        let d = LaunchDescription {
            kvm_policy_rule: KvmPolicyRule::Bits(0x13_ffff),
            ..good(LaunchPlatform::Snp)
        };
        let r = refused(&policy("allow_debug = true"), &d);
        assert_names(
            &r,
            "allow_debug",
            "DEBUG (bit 19)",
            "KVM_X86_SNP_POLICY_BITS = 0x13ffff",
        );
    }

    #[test]
    fn a_virtio_device_without_access_platform_is_refused_on_snp_guests() {
        let mut d = good(LaunchPlatform::Snp);
        d.virtio_devices.push(VirtioDeviceInfo {
            name: "virtio-legacy".into(),
            offers_access_platform: false,
        });
        let r = refused(&Policy::default(), &d);
        assert_eq!(
            r,
            LaunchRefusal::VirtioAccessPlatform {
                device: "virtio-legacy".into()
            }
        );
        assert_names(
            &r,
            "virtio_access_platform",
            "`virtio-legacy` without VIRTIO_F_ACCESS_PLATFORM",
            "does not probe",
        );
        // A plain KVM guest does not need it.
        d.platform = LaunchPlatform::None;
        assert!(policy("launch.require_snp = false")
            .check_launch(&d)
            .is_ok());
    }

    #[test]
    fn virtio_devices_are_refused_when_shared_memory_is_forbidden() {
        let p = policy("[launch]\nallow_shared_memory = false");
        let r = refused(&p, &good(LaunchPlatform::Snp));
        assert_eq!(
            r,
            LaunchRefusal::AllowSharedMemory {
                devices: vec!["virtio-blk 0 (disk.img)".into()]
            }
        );
        assert_names(
            &r,
            "launch.allow_shared_memory",
            "virtio devices (virtio-blk 0 (disk.img))",
            "virtio DMA needs shared bounce buffers",
        );
    }

    #[test]
    fn launch_keys_parse_as_a_table_or_dotted_and_unknown_ones_are_refused() {
        let p = policy(
            "[launch]\nrequire_snp = false\nallow_simulation = true\nallow_shared_memory = false",
        );
        assert_eq!(
            p.launch,
            crate::LaunchPolicy {
                require_snp: false,
                allow_simulation: true,
                allow_shared_memory: false
            }
        );
        assert!(!policy("launch.require_snp = false").launch.require_snp);
        let err = Policy::from_toml("[launch]\nallow_sim = true", "t.toml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("allow_sim") && err.contains("t.toml"), "{err}");
    }

    #[test]
    fn kvm_rule_from_the_probe() {
        assert_eq!(KvmPolicyRule::from_policy_bits(None), KvmPolicyRule::Fixed);
        assert_eq!(
            KvmPolicyRule::from_policy_bits(Some(0x1b_ffff)),
            KvmPolicyRule::Bits(0x1b_ffff)
        );
        assert_eq!(KvmPolicyRule::Fixed.accepted_bits(), 0x1b_ffff);
    }
}
