//! The tenant policy file (TOML) and what is derived from it: the report checks, the SNP
//! guest policy to launch with, and the launch rules of `cloister run --policy`.
//!
//! Input: `[launch description: 6 bytes][TOML text]`. The description is a
//! `LaunchDescription` (platform, host SMT, firmware ABI, KVM's policy rule, virtio
//! devices, debug and migration-agent requests). Seeds: the repository's policy examples,
//! the TOML of the docs, the policies of the policy crate's tests, and one policy with
//! every key set; `seeds.sh` also writes a dictionary of every key (`policy_toml.dict`).
//!
//! Asserted besides no panic:
//! - a parsed policy serialises (its `Serialize`) to TOML that parses back to the same
//!   policy;
//! - the guest policy it launches with has bit 17 set, nothing above bit 25, its ABI from
//!   `abi_minimum`, and passes the same file's guest-policy checks (as documented);
//! - `check_launch` returns that guest policy or a refusal naming its rule, and never
//!   lets through what a rule forbids: a plain launch under `require_snp`, a simulated
//!   one without `allow_simulation`, a debug or migration-agent request the file refuses,
//!   and on SNP platforms a bit KVM does not accept, single-socket, a virtio device
//!   without ACCESS_PLATFORM, or devices while shared memory is refused;
//! - the report checks run on AMD's reports for every generation.
#![no_main]

use cloister_attestation::report::{AttestationReport, Generation, REPORT_SIZE};
use cloister_fuzz::fixtures;
use cloister_fuzz::input::{Reader, Writer};
use cloister_fuzz::Seeds;
use cloister_policy::{
    Hex, KvmPolicyRule, LaunchDescription, LaunchPlatform, LaunchPolicy, MajorMinor,
    PlatformPolicy, Policy, Signer, TcbMinimum, VirtioDeviceInfo, Vmpl,
};
use libfuzzer_sys::fuzz_target;

const RSVD_MBO: u64 = 1 << 17;

/// The checks of the guest-policy bits (`policy.<name>`).
const GUEST_POLICY_CHECKS: [&str; 10] = [
    "policy.abi_minimum",
    "policy.smt",
    "policy.migration_agent",
    "policy.debug",
    "policy.single_socket",
    "policy.cxl",
    "policy.mem_aes_256_xts",
    "policy.rapl_disabled",
    "policy.ciphertext_hiding",
    "policy.page_swap_disabled",
];

fn read_launch(r: &mut Reader) -> LaunchDescription {
    let (a, b, c) = (r.u8(), r.u8(), r.u8());
    let kvm_bits = r.u16();
    let abi = r.u8();
    LaunchDescription {
        platform: [
            LaunchPlatform::None,
            LaunchPlatform::Sim,
            LaunchPlatform::Snp,
        ][usize::from(a % 3)],
        vcpus: u32::from(b),
        host_smt_active: [None, Some(false), Some(true), None][usize::from(a >> 2) & 3],
        firmware_abi: (a & 0x10 != 0).then_some((abi >> 4, abi & 15)),
        virtio_devices: (0..usize::from(c & 3))
            .map(|i| VirtioDeviceInfo {
                name: format!("virtio-blk {i}"),
                offers_access_platform: c & (4 << i) != 0,
            })
            .collect(),
        // Bits(..) sets the policy bits 16..=31 from the input on top of ABI and bit 17.
        kvm_policy_rule: if a & 0x20 != 0 {
            KvmPolicyRule::Bits(0xffff | RSVD_MBO | u64::from(kvm_bits) << 16)
        } else {
            KvmPolicyRule::Fixed
        },
        request_debug: a & 0x40 != 0,
        request_migration_agent: a & 0x80 != 0,
    }
}

/// The input bytes of a launch description: a, b, c, kvm bits, abi.
fn launch_bytes(platform: u8, debug: bool, devices: u8) -> [u8; 6] {
    [
        platform | if debug { 0x40 } else { 0 } | 0x10,
        1,
        devices,
        0,
        0,
        0x1a,
    ]
}

/// A version-5 report with `policy` as its POLICY (the rest zero).
fn report_with_policy(policy: u64) -> Option<AttestationReport> {
    let mut raw = [0u8; REPORT_SIZE];
    raw[0] = 5;
    raw[8..16].copy_from_slice(&policy.to_le_bytes());
    AttestationReport::parse(&raw).ok()
}

fn check_launch(policy: &Policy, launch: &LaunchDescription) {
    let bits = policy.guest_policy_bits();
    let result = policy.check_launch(launch);
    let snp = matches!(launch.platform, LaunchPlatform::Sim | LaunchPlatform::Snp);
    match &result {
        Ok(given) => {
            assert_eq!(*given, bits);
            assert!(!(launch.platform == LaunchPlatform::None && policy.launch.require_snp));
            assert!(launch.platform != LaunchPlatform::Sim || policy.launch.allow_simulation);
            assert!(!launch.request_debug || policy.allow_debug);
            assert!(!launch.request_migration_agent || policy.allow_migration_agent);
            if snp {
                let accepted = launch.kvm_policy_rule.accepted_bits();
                assert_eq!(bits & !accepted & !RSVD_MBO, 0, "a bit KVM refuses");
                assert!(!policy.require_single_socket);
                assert!(launch
                    .virtio_devices
                    .iter()
                    .all(|d| d.offers_access_platform));
                assert!(policy.launch.allow_shared_memory || launch.virtio_devices.is_empty());
                if !policy.allow_smt {
                    assert_ne!(launch.kvm_policy_rule, KvmPolicyRule::Fixed);
                    assert_ne!(launch.host_smt_active, Some(true));
                }
                if let (Some(min), Some((major, minor))) = (policy.abi_minimum, launch.firmware_abi)
                {
                    assert!(min <= MajorMinor { major, minor });
                }
            }
        }
        Err(refusal) => {
            assert!(!refusal.rule().is_empty());
            assert!(refusal.to_string().contains(refusal.rule()), "{refusal}");
        }
    }
    assert_eq!(
        policy.allows_conversion_to_shared(),
        policy.launch.allow_shared_memory
    );
}

fuzz_target!(init: cloister_fuzz::init(seeds, warm_up), |data: &[u8]| {
    let mut r = Reader::new(data);
    let launch = read_launch(&mut r);
    let Ok(text) = std::str::from_utf8(r.rest()) else {
        return;
    };
    let Ok(policy) = Policy::from_toml(text, "fuzz.toml") else {
        return;
    };

    // Serialize, then parse back.
    let toml = toml::to_string(&policy).expect("a parsed policy serialises");
    let back = Policy::from_toml(&toml, "round-trip.toml")
        .unwrap_or_else(|e| panic!("serialised policy does not parse: {e}\n{toml}"));
    assert_eq!(back, policy, "TOML round trip\n{toml}");

    // The guest policy to launch with, and the file's own checks on it.
    let bits = policy.guest_policy_bits();
    assert_ne!(bits & RSVD_MBO, 0);
    assert_eq!(bits >> 26, 0);
    let abi = policy.abi_minimum.map_or(0, |v| u64::from(v.major) << 8 | u64::from(v.minor));
    assert_eq!(bits & 0xffff, abi);
    if let Some(report) = report_with_policy(bits) {
        for generation in Generation::ALL {
            for c in policy.check(&report, generation) {
                if GUEST_POLICY_CHECKS.contains(&c.name.as_str()) {
                    assert!(c.ok(), "the launched guest policy fails its own file: {c}");
                }
            }
        }
    }
    check_launch(&policy, &launch);
    for set in fixtures::vector_sets() {
        if let Ok(report) = AttestationReport::parse(&set.report) {
            for generation in Generation::ALL {
                let _ = policy.check(&report, generation);
            }
        }
    }
});

fn warm_up() {
    let _ = fixtures::vector_sets();
}

/// A policy with every key set (a struct literal: a new key does not compile until it is
/// given here, so this seed always covers every key).
fn every_key() -> Policy {
    let tcb = TcbMinimum {
        bootloader: 3,
        tee: 0,
        snp: 8,
        microcode: 0x73,
        fmc: 0,
    };
    Policy {
        abi_minimum: Some(MajorMinor {
            major: 1,
            minor: 51,
        }),
        allow_smt: true,
        allow_migration_agent: false,
        allow_debug: false,
        require_single_socket: false,
        allow_cxl: false,
        require_mem_aes_256_xts: false,
        require_rapl_disabled: false,
        require_ciphertext_hiding: false,
        require_page_swap_disabled: false,
        minimum_guest_svn: 1,
        report_data: Some(Hex([0x11; 64])),
        host_data: Some(Hex([0x22; 32])),
        image_id: Some(Hex([0x33; 16])),
        family_id: Some(Hex([0x44; 16])),
        report_id: Some(Hex([0x55; 32])),
        report_id_ma: Some(Hex([0xff; 32])),
        chip_id: Some(Hex([0x66; 64])),
        measurements: vec![Hex([0x77; 48]), Hex([0x78; 48])],
        minimum_build: Some(3),
        minimum_version: Some(MajorMinor {
            major: 1,
            minor: 55,
        }),
        minimum_current_tcb: Some(tcb),
        minimum_reported_tcb: Some(tcb),
        minimum_committed_tcb: Some(tcb),
        minimum_launch_tcb: Some(tcb),
        permit_provisional_firmware: true,
        vmpl: Vmpl::Any,
        require_author_key: true,
        require_id_block: true,
        trusted_author_key_digests: vec![Hex([0x88; 48])],
        trusted_id_key_digests: vec![Hex([0x99; 48])],
        minimum_launch_mit_vector: Some(0x3f),
        minimum_current_mit_vector: Some(1),
        platform: Some(PlatformPolicy {
            allow_smt_enabled: false,
            allow_tsme_enabled: false,
            require_ecc: true,
            require_rapl_disabled: true,
            require_ciphertext_hiding: true,
            require_alias_check_complete: true,
        }),
        signer: Some(Signer::Vcek),
        launch: LaunchPolicy {
            require_snp: false,
            allow_simulation: true,
            allow_shared_memory: false,
        },
    }
}

/// The string literals passed to `policy(...)` or `from_toml(...)` in a Rust file (the
/// policy crate's tests), unescaped.
fn toml_literals(source: &str) -> Vec<String> {
    let mut out = Vec::new();
    for marker in ["policy(\"", "from_toml(\""] {
        for (at, _) in source.match_indices(marker) {
            let mut s = String::new();
            let mut chars = source[at + marker.len()..].chars();
            while let Some(c) = chars.next() {
                match c {
                    '"' => break,
                    '\\' => match chars.next() {
                        Some('n') => s.push('\n'),
                        Some('t') => s.push('\t'),
                        Some(other) => s.push(other),
                        None => break,
                    },
                    c => s.push(c),
                }
            }
            out.push(s);
        }
    }
    out
}

/// The ```toml blocks of a Markdown file.
fn markdown_toml(text: &str) -> Vec<String> {
    text.split("```toml\n")
        .skip(1)
        .filter_map(|rest| rest.split("```").next())
        .map(str::to_string)
        .collect()
}

fn seeds(out: &mut Seeds) {
    let root = fixtures::repo_root();
    let mut texts: Vec<(String, String)> = Vec::new();
    for path in fixtures::policy_examples() {
        if let Ok(text) = std::fs::read_to_string(&path) {
            texts.push((
                format!(
                    "example-{}",
                    path.file_stem().unwrap_or_default().to_string_lossy()
                ),
                text,
            ));
        }
    }
    for doc in [
        "README.md",
        "docs/launch-policy.md",
        "docs/verify-checks.md",
    ] {
        if let Ok(text) = std::fs::read_to_string(root.join(doc)) {
            for (i, t) in markdown_toml(&text).into_iter().enumerate() {
                texts.push((format!("{doc}-{i}"), t));
            }
        }
    }
    for src in [
        "policy/src/tests.rs",
        "policy/src/launch.rs",
        "policy/src/file.rs",
    ] {
        if let Ok(text) = std::fs::read_to_string(root.join(src)) {
            for (i, t) in toml_literals(&text).into_iter().enumerate() {
                texts.push((format!("{src}-{i}"), t));
            }
        }
    }
    if let Ok(all) = toml::to_string(&every_key()) {
        texts.push(("every-key".into(), all));
    }
    // Each text under a simulated launch with a disk, and a plain one asking for debug.
    for (name, text) in &texts {
        out.add(
            &format!("{name}-sim"),
            &Writer::new()
                .bytes(&launch_bytes(1, false, 1 | 4))
                .bytes(text.as_bytes())
                .finish(),
        );
        out.add(
            &format!("{name}-none-debug"),
            &Writer::new()
                .bytes(&launch_bytes(0, true, 0))
                .bytes(text.as_bytes())
                .finish(),
        );
    }
}
