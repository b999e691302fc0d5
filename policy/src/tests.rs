#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use super::*;
use cloister_attestation::report::{AttestationReport, Generation};
use cloister_attestation::verify::{Check, Outcome};

fn report(set: &str) -> AttestationReport {
    let path = format!(
        "{}/../../shared/vectors/snp/{set}/report.bin",
        env!("CARGO_MANIFEST_DIR")
    );
    AttestationReport::from_bytes(&std::fs::read(path).unwrap()).unwrap()
}

fn policy(toml: &str) -> Policy {
    Policy::from_toml(toml, "test.toml").unwrap()
}

fn outcome(checks: &[Check], name: &str) -> Outcome {
    checks
        .iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no check {name} in {checks:#?}"))
        .outcome
}

fn failed(checks: &[Check]) -> Vec<&str> {
    checks
        .iter()
        .filter(|c| c.outcome == Outcome::Fail)
        .map(|c| c.name.as_str())
        .collect()
}

#[test]
fn default_policy_accepts_the_plain_milan_vcek_report() {
    let checks = Policy::default().check(&report("milan-v2-vcek"), Generation::Milan);
    assert!(failed(&checks).is_empty(), "{checks:#?}");
    assert_eq!(Policy::default(), policy(""));
}

#[test]
fn vmpl_1_is_refused_by_default_and_accepted_on_request() {
    let r = report("milan-v3-vlek");
    let checks = Policy::default().check(&r, Generation::Milan);
    assert_eq!(outcome(&checks, "policy.vmpl"), Outcome::Fail);
    let checks = policy("vmpl = 1").check(&r, Generation::Milan);
    assert_eq!(outcome(&checks, "policy.vmpl"), Outcome::Pass);
    let checks = policy("vmpl = \"any\"").check(&r, Generation::Milan);
    assert_eq!(outcome(&checks, "policy.vmpl"), Outcome::Skip);
    assert!(Policy::from_toml("vmpl = 4", "p").is_err());
    assert!(Policy::from_toml("vmpl = \"all\"", "p").is_err());
}

#[test]
fn provisional_firmware_in_tcb_skew_is_refused_unless_permitted() {
    let r = report("milan-v2-tcb-skew");
    let checks = Policy::default().check(&r, Generation::Milan);
    assert_eq!(failed(&checks), ["policy.provisional_firmware"]);
    let c = checks
        .iter()
        .find(|c| c.name == "policy.provisional_firmware")
        .unwrap();
    assert!(
        c.found.contains("ucode=0xce") && c.found.contains("ucode=0x73"),
        "{c}"
    );
    let checks = policy("permit_provisional_firmware = true").check(&r, Generation::Milan);
    assert!(failed(&checks).is_empty(), "{checks:#?}");
}

#[test]
fn guest_svn_family_and_image_ids_and_abi() {
    let r = report("milan-v2-tcb-skew");
    let fam = hex::encode(r.family_id);
    let img = hex::encode(r.image_id);
    let ok = policy(&format!(
        "permit_provisional_firmware = true\nminimum_guest_svn = 4\nfamily_id = \"{fam}\"\nimage_id = \"{img}\"\nabi_minimum = \"0.31\""
    ));
    assert!(failed(&ok.check(&r, Generation::Milan)).is_empty());
    let bad = policy(
        "permit_provisional_firmware = true\nminimum_guest_svn = 5\nfamily_id = \"00000000000000000000000000000001\"\nimage_id = \"00000000000000000000000000000002\"\nabi_minimum = \"1.0\"",
    );
    let checks = bad.check(&r, Generation::Milan);
    assert_eq!(
        failed(&checks),
        [
            "policy.abi_minimum",
            "policy.guest_svn",
            "policy.image_id",
            "policy.family_id"
        ]
    );
}

#[test]
fn debug_and_migration_agent_bits_fire() {
    let path = format!(
        "{}/../../shared/vectors/snp/milan-v2-vcek/report.bin",
        env!("CARGO_MANIFEST_DIR")
    );
    let mut bytes = std::fs::read(path).unwrap();
    bytes[0x0A] |= 0x08 | 0x04; // POLICY bits 19 (debug) and 18 (migration agent)
    let r = AttestationReport::from_bytes(&bytes).unwrap();
    let checks = Policy::default().check(&r, Generation::Milan);
    assert_eq!(failed(&checks), ["policy.migration_agent", "policy.debug"]);
    let checks =
        policy("allow_debug = true\nallow_migration_agent = true").check(&r, Generation::Milan);
    assert!(failed(&checks).is_empty());
}

#[test]
fn tcb_minimums_use_the_generation_layout() {
    let r = report("turin-v5-vcek");
    let ok = policy("[minimum_reported_tcb]\nfmc = 1\nbootloader = 3\ntee = 2\nsnp = 5\nmicrocode = 0x61\n[minimum_launch_tcb]\nsnp = 5");
    assert!(failed(&ok.check(&r, Generation::Turin)).is_empty());
    let bad = policy("[minimum_reported_tcb]\nfmc = 2\n[minimum_current_tcb]\nmicrocode = 0x62\n[minimum_committed_tcb]\nsnp = 6");
    assert_eq!(
        failed(&bad.check(&r, Generation::Turin)),
        [
            "policy.minimum_current_tcb",
            "policy.minimum_reported_tcb",
            "policy.minimum_committed_tcb"
        ]
    );
    // Milan: microcode 0x73 reported.
    let m = report("milan-v2-vcek");
    let checks = policy("[minimum_reported_tcb]\nmicrocode = 0x74").check(&m, Generation::Milan);
    assert_eq!(failed(&checks), ["policy.minimum_reported_tcb"]);
}

#[test]
fn mitigation_vectors_and_versions() {
    let r = report("turin-v5-vcek");
    let ok = policy("minimum_launch_mit_vector = 0x3f\nminimum_current_mit_vector = 1\nminimum_build = 3\nminimum_version = \"1.58\"");
    assert!(
        failed(&ok.check(&r, Generation::Turin)).is_empty(),
        "{:#?}",
        ok.check(&r, Generation::Turin)
    );
    let bad =
        policy("minimum_launch_mit_vector = 0x40\nminimum_build = 4\nminimum_version = \"1.59\"");
    assert_eq!(
        failed(&bad.check(&r, Generation::Turin)),
        [
            "policy.minimum_build",
            "policy.minimum_version",
            "policy.launch_mit_vector"
        ]
    );
    // A v2 report has no vectors: a nonzero minimum fails.
    let m = report("milan-v2-vcek");
    assert_eq!(
        failed(&policy("minimum_current_mit_vector = 1").check(&m, Generation::Milan)),
        ["policy.current_mit_vector"]
    );
}

#[test]
fn measurements_list_report_data_chip_id_and_keys() {
    let r = report("milan-v2-vcek");
    let m = hex::encode(r.measurement);
    let rd = hex::encode(r.report_data);
    let chip = hex::encode(r.chip_id);
    let zeros48 = "00".repeat(48);
    let p = policy(&format!(
        "measurements = [\"{zeros48}\", \"{m}\"]\nreport_data = \"{rd}\"\nchip_id = \"{chip}\""
    ));
    assert!(failed(&p.check(&r, Generation::Milan)).is_empty());
    let p = policy(&format!("measurements = [\"{zeros48}\"]\nrequire_id_block = true\nrequire_author_key = true\nsigner = \"vlek\""));
    assert_eq!(
        failed(&p.check(&r, Generation::Milan)),
        [
            "policy.measurement",
            "policy.author_key",
            "policy.id_block",
            "policy.signer"
        ]
    );
    let p = policy(&format!(
        "require_id_block = true\ntrusted_id_key_digests = [\"{}\"]",
        hex::encode(r.id_key_digest)
    ));
    assert!(failed(&p.check(&r, Generation::Milan)).is_empty());
}

#[test]
fn platform_info_limits() {
    let r = report("milan-v3-vlek"); // PLATFORM_INFO 0x27: SMT, TSME, ECC, alias check
    let p = policy("vmpl = 1\npermit_provisional_firmware = true\n[platform]\nallow_smt_enabled = false\nrequire_rapl_disabled = true");
    let checks = p.check(&r, Generation::Milan);
    assert_eq!(failed(&checks), ["policy.platform_info"]);
    let c = checks
        .iter()
        .find(|c| c.name == "policy.platform_info")
        .unwrap();
    assert!(
        c.found.contains("SMT enabled") && c.found.contains("RAPL not disabled"),
        "{c}"
    );
}

#[test]
fn unknown_keys_and_bad_values_are_rejected_with_the_key_named() {
    for (toml, needle) in [
        ("allow_debugg = true", "allow_debugg"),
        ("[minimum_reported_tcb]\nucode = 1", "ucode"),
        ("measurements = [\"abcd\"]", "expected 48 bytes"),
        ("host_data = \"zz\"", "hex"),
        ("minimum_version = \"1\"", "major.minor"),
        ("minimum_build = 300", "minimum_build"),
        ("[platform]\nsmt = true", "smt"),
    ] {
        let err = Policy::from_toml(toml, "tenant.toml")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(needle) && err.contains("tenant.toml"),
            "{toml}: {err}"
        );
    }
}

#[test]
fn verdict_renders_table_and_json() {
    let r = report("milan-v2-tcb-skew");
    let checks = Policy::default().check(&r, Generation::Milan);
    let v = Verdict::new(
        vec![Fact {
            name: "generation".into(),
            value: "Milan".into(),
        }],
        checks,
    );
    assert!(!v.accepted);
    let table = v.table();
    assert!(
        table.contains("VERDICT: REJECTED (1 failed: policy.provisional_firmware)"),
        "{table}"
    );
    let json: serde_json::Value = serde_json::from_str(&v.to_json()).unwrap();
    assert_eq!(json["accepted"], false);
    assert!(json["checks"]
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c["name"] == "policy.provisional_firmware" && c["outcome"] == "fail"));
}

#[test]
fn the_example_policy_parses_and_accepts_the_milan_vcek_report() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/tenant.toml");
    let p = Policy::from_file(&path).unwrap();
    let checks = p.check(&report("milan-v2-vcek"), Generation::Milan);
    assert!(failed(&checks).is_empty(), "{checks:#?}");
    assert_eq!(outcome(&checks, "policy.measurement"), Outcome::Pass);
    // ...and refuses the tcb-skew report (another measurement, provisional firmware).
    let checks = p.check(&report("milan-v2-tcb-skew"), Generation::Milan);
    assert_eq!(
        failed(&checks),
        ["policy.measurement", "policy.provisional_firmware"]
    );
}

#[test]
fn the_example_policy_launches_with_0x30000_and_its_launch_example_is_the_default() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/tenant.toml");
    let p = Policy::from_file(&path).unwrap();
    assert_eq!(
        p.guest_policy_bits(),
        0x3_0000,
        "ABI 0.0, SMT allowed, bit 17"
    );
    assert_eq!(p.launch, LaunchPolicy::default());
    // The commented [launch] example, uncommented, parses and states the defaults.
    let text = std::fs::read_to_string(&path).unwrap();
    let example: String = text
        .lines()
        .skip_while(|l| *l != "# [launch]")
        .map(|l| format!("{}\n", l.strip_prefix("# ").unwrap()))
        .collect();
    assert!(example.starts_with("[launch]\nrequire_snp"), "{example}");
    assert_eq!(policy(&example).launch, LaunchPolicy::default());
}

#[test]
fn policy_files_without_a_launch_table_keep_their_meaning_and_launch_only_on_snp() {
    // Every policy of the verify tests above still parses; none has launch keys.
    for toml in [
        "",
        "vmpl = \"any\"",
        "permit_provisional_firmware = true\nminimum_guest_svn = 4",
        "[minimum_reported_tcb]\nmicrocode = 0x74",
        "[platform]\nallow_smt_enabled = false",
    ] {
        let p = policy(toml);
        assert_eq!(p.launch, LaunchPolicy::default(), "{toml}");
        assert!(p.launch.require_snp && !p.launch.allow_simulation);
        assert!(p.allows_conversion_to_shared());
    }
    assert_eq!(Policy::default().launch, policy("[launch]").launch);
}
