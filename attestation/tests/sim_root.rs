//! The simulation root of trust: its reports verify through the full verify path only when
//! it is trusted explicitly; an independent SNP verifier (the `sev` crate) accepts them
//! given the sim chain as its root; the certificate directory it exports loads as
//! snpguest's; a saved root loads back and a tampered one is refused; AMD's vectors verify
//! exactly as before with the option on.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod sim_common;

use std::os::unix::fs::PermissionsExt;

use cloister_attestation::certs::{CertBundle, Certificate};
use cloister_attestation::launch::digest::{LaunchDigest, PageType, PAGE_SIZE, VMSA_GPA};
use cloister_attestation::report::{AttestationReport, Generation};
use cloister_attestation::sim::{SimError, SimRoot};
use cloister_attestation::verify::{verify, Outcome, VerifyOptions};
use sev::certs::snp::{ca, Chain, Verifiable};
use sev::parser::ByteParser;
use sim_common::{get_report, launched, launched_with, profile_dir, root, root_of};
use time::OffsetDateTime;

fn trusting() -> VerifyOptions {
    let mut opts = VerifyOptions::at(OffsetDateTime::now_utc());
    opts.trust_sim_root = true;
    opts
}

fn failed(v: &cloister_attestation::verify::Verification) -> Vec<String> {
    v.failures().map(ToString::to_string).collect()
}

fn sev_verifies(report: &[u8], root: &SimRoot) -> Result<(), String> {
    let r =
        sev::firmware::guest::AttestationReport::from_bytes(report).map_err(|e| e.to_string())?;
    let cert = |der: &[u8]| sev::certs::snp::Certificate::from_der(der).unwrap();
    let chain = Chain {
        ca: ca::Chain {
            ark: cert(root.ark_der()),
            ask: cert(root.ask_der()),
        },
        vek: cert(root.vcek_der()),
    };
    (&chain, &r).verify().map_err(|e| e.to_string())
}

#[test]
fn measurement_equals_the_launch_digest_of_the_same_pages() {
    let pages = [
        (0x0, PageType::Normal, [0x01; PAGE_SIZE]),
        (0x1000, PageType::Zero, [0; PAGE_SIZE]),
        (0x2000, PageType::Unmeasured, [0x99; PAGE_SIZE]),
        (0x10_0000, PageType::Normal, [0xC3; PAGE_SIZE]),
    ];
    let mut psp = launched(&pages, [0x5C; 32]);
    let mut ld = LaunchDigest::new();
    for (gpa, t, page) in &pages {
        ld.update_page(*t, *gpa, Some(page)).unwrap();
    }
    ld.update_page(PageType::Vmsa, VMSA_GPA, Some(&[0x5a; PAGE_SIZE]))
        .unwrap();
    let report = AttestationReport::from_bytes(&get_report(&mut psp, 1, [3; 64])).unwrap();
    assert_eq!(report.measurement, ld.digest());
    assert_eq!(report.host_data, [0x5C; 32]);
}

#[test]
fn measurement_equals_launch_plan_measure() {
    use cloister_attestation::launch::plan::{
        LaunchPlan, LaunchRegion, RegionContents, RegionRole,
    };
    use cloister_attestation::sim::SimPsp;
    use std::borrow::Cow;
    let kernel: Vec<u8> = (0..3 * PAGE_SIZE).map(|i| (i % 251) as u8).collect();
    let region = |gpa, pages: u64, t, what, contents| {
        LaunchRegion::new(
            gpa,
            pages * PAGE_SIZE as u64,
            t,
            RegionRole::Other(what),
            contents,
        )
        .unwrap()
    };
    let plan = LaunchPlan::new(
        vec![
            region(
                0x10_0000,
                3,
                PageType::Normal,
                "kernel",
                RegionContents::Bytes(Cow::Borrowed(&kernel)),
            ),
            region(0x0, 2, PageType::Zero, "low memory", RegionContents::Zeroes),
            region(
                0x5000,
                1,
                PageType::Secrets,
                "secrets",
                RegionContents::Zeroes,
            ),
            region(0x6000, 1, PageType::Cpuid, "cpuid", RegionContents::Zeroes),
            region(
                0x7000,
                1,
                PageType::Unmeasured,
                "staging",
                RegionContents::Zeroes,
            ),
            LaunchRegion::new(
                VMSA_GPA,
                PAGE_SIZE as u64,
                PageType::Vmsa,
                RegionRole::Vmsa { vcpu: 0 },
                RegionContents::Bytes(Cow::Owned(vec![0x11; PAGE_SIZE])),
            )
            .unwrap(),
        ],
        1,
    )
    .unwrap();
    let mut psp = SimPsp::new(root());
    psp.launch_start(plan.policy, [0; 16]).unwrap();
    for page in plan.pages() {
        let mut bytes = [0u8; PAGE_SIZE];
        if let Some(c) = page.contents {
            bytes.copy_from_slice(c);
        }
        if page.page_type == PageType::Vmsa {
            psp.launch_update_vmsa(&bytes).unwrap();
        } else {
            psp.launch_update(page.gpa, page.page_type, &mut bytes)
                .unwrap();
        }
    }
    psp.launch_finish(None, false, plan.host_data).unwrap();
    assert_eq!(psp.measurement(), plan.measure());
    let counts = psp.page_counts();
    assert_eq!(
        (
            counts["normal"],
            counts["zero"],
            counts["secrets"],
            counts["cpuid"],
            counts["vmsa"]
        ),
        (3, 2, 1, 1, 1)
    );
    let report = AttestationReport::from_bytes(&get_report(&mut psp, 1, [0; 64])).unwrap();
    assert_eq!(report.measurement, plan.measure());
}

#[test]
fn the_sev_crate_accepts_a_sim_report_with_the_sim_chain_as_root() {
    let root = root();
    let mut psp = launched(&[(0x1000, PageType::Normal, [7; PAGE_SIZE])], [1; 32]);
    let report = get_report(&mut psp, 1, [0xEE; 64]);
    sev_verifies(&report, &root).unwrap();
    // ... and rejects it when a signed byte changes.
    for byte in [0x50, 0x90, 0x1A0, 0x29F] {
        let mut b = report.clone();
        b[byte] ^= 1;
        assert!(sev_verifies(&b, &root).is_err(), "byte {byte:#x}");
    }
    // The sev crate's own parse agrees on the fields.
    let theirs = sev::firmware::guest::AttestationReport::from_bytes(&report).unwrap();
    assert_eq!(theirs.version, 5);
    assert_eq!(theirs.measurement, psp.measurement());
    assert_eq!(theirs.report_data, [0xEE; 64]);
    assert_eq!(theirs.chip_id, root.chip_id());
}

#[test]
fn exported_cert_dir_verifies_only_when_the_sim_root_is_trusted() {
    let dir = tempfile::tempdir().unwrap();
    let certs_dir = dir.path().join("certs");
    root().export_cert_dir(&certs_dir).unwrap();
    let mut names: Vec<_> = std::fs::read_dir(&certs_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["ark.pem", "ask.pem", "vcek.pem"],
        "certificates only, no key"
    );

    let mut psp = launched(&[], [2; 32]);
    let report = get_report(&mut psp, 1, [0; 64]);
    let bundle = CertBundle::from_dir(&certs_dir).unwrap();

    let v = verify(&report, &bundle, &trusting()).unwrap();
    assert!(v.passed(), "{:#?}", failed(&v));
    assert!(v.sim_root_trusted);
    assert_eq!(v.generation, Generation::Genoa);
    let ark = v.checks.iter().find(|c| c.name == "ark.trusted").unwrap();
    assert!(ark.found.contains("CLOISTER SIMULATION ROOT"), "{ark}");
    // Every check AMD's chains get ran and passed (none skipped or missing).
    for name in [
        "generation",
        "ark.signature",
        "ark.names",
        "ark.validity",
        "ark.algorithms",
        "ark.key_usage",
        "ask.signature",
        "ask.names",
        "ask.algorithms",
        "ask.key_usage",
        "vcek.signature",
        "vcek.names",
        "vcek.algorithms",
        "vcek.key_usage",
        "vcek.product_name",
        "report.reserved",
        "report.signature_algo",
        "report.signing_key",
        "report.signature",
        "vcek.tcb",
        "report.tcb_order",
        "vcek.hwid",
    ] {
        let c = v
            .checks
            .iter()
            .find(|c| c.name == name)
            .unwrap_or_else(|| panic!("{name}"));
        assert_eq!(c.outcome, Outcome::Pass, "{c}");
    }

    // Without the option: rejected, naming the simulation root.
    let v = verify(&report, &bundle, &VerifyOptions::default()).unwrap();
    assert!(!v.passed());
    assert!(!v.sim_root_trusted);
    let ark = v.failures().find(|c| c.name == "ark.trusted").unwrap();
    assert!(
        ark.found
            .contains("signed by the Cloister simulation root, not AMD"),
        "{ark}"
    );
    // --allow-untrusted-ark is not a way around it.
    let opts = VerifyOptions {
        allow_untrusted_ark: true,
        ..VerifyOptions::default()
    };
    let v = verify(&report, &bundle, &opts).unwrap();
    assert!(v.failures().any(|c| c.name == "ark.trusted"));

    // Only the VCEK given (AMD's built-in roots then apply): rejected, naming the sim.
    let mut vcek_only = CertBundle::default();
    vcek_only.add_file(&certs_dir.join("vcek.pem")).unwrap();
    let v = verify(&report, &vcek_only, &VerifyOptions::default()).unwrap();
    let ark = v.failures().find(|c| c.name == "ark.trusted").unwrap();
    assert!(ark.found.contains("Cloister simulation root"), "{ark}");
    assert!(v.failures().any(|c| c.name == "vcek.signature"));
    // ... and trusting the sim root needs its ARK.
    let v = verify(&report, &vcek_only, &trusting()).unwrap();
    let ark = v.failures().find(|c| c.name == "ark.trusted").unwrap();
    assert!(ark.found.contains("its ARK was not given"), "{ark}");
}

#[test]
fn a_sim_chain_with_an_altered_certificate_fails_like_an_amd_one() {
    let root = root();
    let mut psp = launched(&[], [0; 32]);
    let report = get_report(&mut psp, 1, [0; 64]);
    // The sim ARK trusted, but the VCEK of another root: signature and hwID fail.
    let other = root_of(Generation::Turin);
    let mut bundle = CertBundle::default();
    bundle
        .add(Certificate::from_der(root.ark_der(), "ark").unwrap(), "ark")
        .unwrap();
    bundle
        .add(Certificate::from_der(root.ask_der(), "ask").unwrap(), "ask")
        .unwrap();
    bundle
        .add(
            Certificate::from_der(other.vcek_der(), "vcek").unwrap(),
            "vcek",
        )
        .unwrap();
    let v = verify(&report, &bundle, &trusting()).unwrap();
    let names: Vec<_> = v.failures().map(|c| c.name.as_str()).collect();
    assert!(names.contains(&"vcek.signature"), "{names:?}");
    assert!(names.contains(&"report.signature"), "{names:?}");
    // A report byte changed: only the report signature fails.
    let mut b = report.clone();
    b[0x50] ^= 1;
    let v = verify(&b, &root.cert_bundle(), &trusting()).unwrap();
    let names: Vec<_> = v.failures().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["report.signature"]);
}

#[test]
fn turin_and_milan_roots_verify_with_their_layouts() {
    for generation in [Generation::Turin, Generation::Milan] {
        let root = root_of(generation);
        assert_eq!(root.generation(), generation);
        let mut psp = launched_with(root.clone(), &[], [4; 32]);
        let report = get_report(&mut psp, 1, [0; 64]);
        let v = verify(&report, &root.cert_bundle(), &trusting()).unwrap();
        assert!(v.passed(), "{generation}: {:#?}", failed(&v));
        assert_eq!(v.generation, generation);
        let parsed = AttestationReport::from_bytes(&report).unwrap();
        assert_eq!(parsed.cpuid_generation(), Some(generation));
        if generation == Generation::Turin {
            assert!(
                parsed.chip_id[8..].iter().all(|&b| b == 0),
                "Turin: 8-byte chip ID"
            );
            let vcek = Certificate::from_der(root.vcek_der(), "vcek").unwrap();
            assert_eq!(vcek.amd.hwid.as_ref().map(Vec::len), Some(8));
            assert!(vcek.amd.fmc.is_some());
        }
        sev_verifies(&report, &root).unwrap_or_else(|e| panic!("{generation}: sev: {e}"));
    }
}

#[test]
fn a_saved_root_loads_back_and_a_tampered_one_is_refused() {
    let root = root();
    let cache = profile_dir().join("cloister-sim-root-for-tests");
    for name in ["ark.key", "ask.key", "vcek.key"] {
        let mode = std::fs::metadata(cache.join(name))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{name}");
    }
    // A copy loads (no key generation) as the same root.
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("root");
    std::fs::create_dir(&copy).unwrap();
    for name in [
        "ark.pem", "ask.pem", "vcek.pem", "ark.key", "ask.key", "vcek.key",
    ] {
        std::fs::copy(cache.join(name), copy.join(name)).unwrap();
    }
    let loaded = SimRoot::load_or_create(&copy).unwrap();
    assert_eq!(loaded.ark_der(), root.ark_der());
    assert_eq!(loaded.vcek_der(), root.vcek_der());
    assert_eq!(loaded.chip_id(), root.chip_id());
    assert_eq!(loaded.tcb(), root.tcb());
    // Asking for another generation in a Genoa root's directory is refused.
    assert!(matches!(
        SimRoot::load_or_create_for(&copy, Generation::Turin),
        Err(SimError::Inconsistent { .. })
    ));

    let tampered = |name: &str, from: &std::path::Path| {
        let dir = tempfile::tempdir().unwrap();
        for f in [
            "ark.pem", "ask.pem", "vcek.pem", "ark.key", "ask.key", "vcek.key",
        ] {
            std::fs::copy(cache.join(f), dir.path().join(f)).unwrap();
        }
        std::fs::copy(from, dir.path().join(name)).unwrap();
        SimRoot::load(dir.path())
    };
    let turin = profile_dir().join("cloister-sim-root-for-tests-Turin");
    root_of(Generation::Turin);
    // Another root's VCEK key, VCEK certificate, or ARK: not consistent.
    for name in ["vcek.key", "vcek.pem", "ark.pem", "ask.key"] {
        let err = tampered(name, &turin.join(name)).unwrap_err();
        assert!(
            matches!(err, SimError::Inconsistent { .. }),
            "{name}: {err}"
        );
    }
    // AMD's ARK is never loaded as a simulation root.
    let amd_ark =
        std::path::PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/roots/genoa/ark.pem"));
    let err = tampered("ark.pem", &amd_ark).unwrap_err();
    assert!(
        err.to_string().contains("not a Cloister simulation ARK"),
        "{err}"
    );
}

#[test]
fn amd_vectors_verify_exactly_as_before_with_the_option_on() {
    use time::macros::datetime;
    for (set, at) in [
        ("milan-v2-vcek", datetime!(2026-11-01 00:00 UTC)),
        ("milan-v2-tcb-skew", datetime!(2026-11-01 00:00 UTC)),
        ("milan-v3-vlek", datetime!(2025-06-01 00:00 UTC)),
        ("turin-v5-vcek", datetime!(2026-11-01 00:00 UTC)),
    ] {
        let path = |f: &str| {
            std::path::PathBuf::from(format!(
                "{}/../../shared/vectors/snp/{set}/{f}",
                env!("CARGO_MANIFEST_DIR")
            ))
        };
        let report = std::fs::read(path("report.bin")).unwrap();
        let mut certs = CertBundle::default();
        certs.add_file(&path("vek.der")).unwrap();
        certs.add_file(&path("chain.pem")).unwrap();
        let plain = verify(&report, &certs, &VerifyOptions::at(at)).unwrap();
        let mut opts = VerifyOptions::at(at);
        opts.trust_sim_root = true;
        let with = verify(&report, &certs, &opts).unwrap();
        assert!(plain.passed() && with.passed(), "{set}");
        assert!(!with.sim_root_trusted);
        assert_eq!(plain.checks, with.checks, "{set}");
    }
}
