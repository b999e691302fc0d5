#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::{Arc, OnceLock};

use aes_gcm::aead::AeadInPlace;
use aes_gcm::{Aes256Gcm, KeyInit, Nonce, Tag};
use time::OffsetDateTime;

use super::*;
use crate::certs::{CertRole, Certificate};
use crate::launch::digest::{LaunchDigest, PageType, PAGE_SIZE};
use crate::report::{AttestationReport, Generation};
use crate::verify::{verify, VerifyOptions};

/// One root for every test of this binary, kept under the target directory so RSA-4096 key
/// generation runs once per build tree, not once per test run.
fn root() -> Arc<SimRoot> {
    static ROOT: OnceLock<Arc<SimRoot>> = OnceLock::new();
    ROOT.get_or_init(|| {
        let exe = std::env::current_exe().unwrap();
        // target/<profile>/deps/<test binary>
        let dir = exe
            .parent()
            .and_then(|deps| deps.parent())
            .unwrap()
            .join("cloister-sim-root-for-tests");
        Arc::new(SimRoot::load_or_create(&dir).unwrap())
    })
    .clone()
}

fn launched(pages: &[(u64, PageType, [u8; PAGE_SIZE])], host_data: [u8; 32]) -> SimPsp {
    let mut psp = SimPsp::new(root());
    psp.launch_start(0x3_0000, [0; 16]).unwrap();
    for (gpa, t, page) in pages {
        let mut p = *page;
        psp.launch_update(*gpa, *t, &mut p).unwrap();
    }
    psp.launch_update_vmsa(&[0x5a; PAGE_SIZE]).unwrap();
    psp.launch_finish(None, false, host_data).unwrap();
    psp
}

/// A guest request as the guest builds it (SNP-FACTS §5.5), independent of `message`.
fn request(key: &[u8; 32], vmpck: u8, seqno: u64, msg_type: u8, payload: &[u8]) -> [u8; PAGE_SIZE] {
    let mut page = [0u8; PAGE_SIZE];
    page[0x20..0x28].copy_from_slice(&seqno.to_le_bytes());
    page[0x30] = 1;
    page[0x31] = 1;
    page[0x32..0x34].copy_from_slice(&0x60u16.to_le_bytes());
    page[0x34] = msg_type;
    page[0x35] = 1;
    page[0x36..0x38].copy_from_slice(&(payload.len() as u16).to_le_bytes());
    page[0x3C] = vmpck;
    let mut body = payload.to_vec();
    let mut iv = [0u8; 12];
    iv[..8].copy_from_slice(&seqno.to_le_bytes());
    let tag = Aes256Gcm::new_from_slice(key)
        .unwrap()
        .encrypt_in_place_detached(&Nonce::from(iv), &page[0x30..0x60], &mut body)
        .unwrap();
    page[..16].copy_from_slice(&tag);
    page[0x60..0x60 + body.len()].copy_from_slice(&body);
    page
}

fn report_req(report_data: [u8; 64], vmpl: u32) -> Vec<u8> {
    let mut r = vec![0u8; 96];
    r[..64].copy_from_slice(&report_data);
    r[0x40..0x44].copy_from_slice(&vmpl.to_le_bytes());
    r
}

/// Decrypts a response page (checking its header) and returns the payload.
fn open_response(key: &[u8; 32], page: &[u8; PAGE_SIZE], seqno: u64) -> Vec<u8> {
    assert_eq!(
        u64::from_le_bytes(page[0x20..0x28].try_into().unwrap()),
        seqno
    );
    assert_eq!(page[0x34], 6, "MSG_REPORT_RSP");
    let size = u16::from_le_bytes([page[0x36], page[0x37]]) as usize;
    let mut body = page[0x60..0x60 + size].to_vec();
    let mut iv = [0u8; 12];
    iv[..8].copy_from_slice(&seqno.to_le_bytes());
    let tag: [u8; 16] = page[..16].try_into().unwrap();
    Aes256Gcm::new_from_slice(key)
        .unwrap()
        .decrypt_in_place_detached(
            &Nonce::from(iv),
            &page[0x30..0x60],
            &mut body,
            &Tag::from(tag),
        )
        .unwrap();
    body
}

#[test]
fn root_certificates_have_amd_structure_and_simulation_names() {
    let root = root();
    assert_eq!(root.generation(), Generation::Genoa);
    let ark = Certificate::from_der(root.ark_der(), "ark").unwrap();
    let ask = Certificate::from_der(root.ask_der(), "ask").unwrap();
    let vcek = Certificate::from_der(root.vcek_der(), "vcek").unwrap();
    assert_eq!(ark.role(), Some(CertRole::Ark));
    assert_eq!(ask.role(), Some(CertRole::Ask));
    assert_eq!(vcek.role(), Some(CertRole::Vcek));
    assert_eq!(ark.subject_cn, "ARK-Genoa");
    assert_eq!(ask.issuer_cn, "ARK-Genoa");
    assert_eq!(vcek.issuer_cn, "SEV-Genoa");
    for c in [&ark, &ask, &vcek] {
        assert!(c.is_simulation(), "{}", c.subject);
        assert!(c.subject.contains("not Advanced Micro Devices"));
    }
    assert_eq!(vcek.amd.product_name.as_deref(), Some("Genoa"));
    assert_eq!(vcek.amd.hwid.as_deref(), Some(&root.chip_id()[..]));
    assert_eq!(vcek.amd.struct_version, Some(1));
    let tcb = vcek.amd.tcb(Generation::Genoa).unwrap();
    assert_eq!(
        crate::report::TcbVersion::from_parts(tcb, Generation::Genoa),
        root.tcb()
    );
    assert!(ask.verify_signed_by(&ark).is_ok());
    assert!(vcek.verify_signed_by(&ask).is_ok());
    assert!(ark.verify_signed_by(&ark).is_ok());
}

#[test]
fn report_round_trip_verifies_with_the_trusted_sim_root() {
    let pages = [
        (0x1000, PageType::Normal, [0x11; PAGE_SIZE]),
        (0x2000, PageType::Normal, [0x22; PAGE_SIZE]),
        (0x3000, PageType::Zero, [0x33; PAGE_SIZE]),
    ];
    let mut psp = launched(&pages, [0xAB; 32]);
    let mut expected = LaunchDigest::new();
    for (gpa, t, page) in &pages {
        expected.update_page(*t, *gpa, Some(page)).unwrap();
    }
    expected
        .update_page(
            PageType::Vmsa,
            crate::launch::digest::VMSA_GPA,
            Some(&[0x5a; PAGE_SIZE]),
        )
        .unwrap();
    assert_eq!(psp.measurement(), expected.digest());
    assert_eq!(psp.page_counts()["normal"], 2);
    assert_eq!(psp.page_counts()["vmsa"], 1);

    let key = psp.vmpcks()[0];
    let req = request(&key, 0, 1, 5, &report_req([7; 64], 0));
    let mut resp = [0u8; PAGE_SIZE];
    assert_eq!(psp.guest_request(&req, &mut resp), FwStatus::SUCCESS);
    let body = open_response(&key, &resp, 2);
    assert_eq!(&body[0..4], &[0, 0, 0, 0], "STATUS");
    assert_eq!(u32::from_le_bytes(body[4..8].try_into().unwrap()), 1184);
    let report_bytes = &body[0x20..0x20 + 1184];
    let report = AttestationReport::from_bytes(report_bytes).unwrap();
    assert_eq!(report.version, 5);
    assert_eq!(report.measurement, expected.digest());
    assert_eq!(report.host_data, [0xAB; 32]);
    assert_eq!(report.report_data, [7; 64]);
    assert_eq!(report.policy, 0x3_0000);
    assert_eq!(report.chip_id, root().chip_id());

    let mut opts = VerifyOptions::at(OffsetDateTime::now_utc());
    opts.trust_sim_root = true;
    let v = verify(report_bytes, &root().cert_bundle(), &opts).unwrap();
    let failed: Vec<_> = v.failures().map(ToString::to_string).collect();
    assert!(v.passed(), "{failed:#?}");
    assert!(v.sim_root_trusted);

    let untrusted = verify(
        report_bytes,
        &root().cert_bundle(),
        &VerifyOptions::default(),
    )
    .unwrap();
    assert!(!untrusted.sim_root_trusted);
    let ark = untrusted
        .failures()
        .find(|c| c.name == "ark.trusted")
        .expect("ark.trusted fails without the option");
    assert!(
        ark.found
            .contains("signed by the Cloister simulation root, not AMD"),
        "{ark}"
    );
}
