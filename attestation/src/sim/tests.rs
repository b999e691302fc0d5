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

#[test]
fn launch_commands_in_order_once() {
    let mut psp = SimPsp::new(root());
    let mut page = [1u8; PAGE_SIZE];
    assert_eq!(
        psp.launch_update(0x1000, PageType::Normal, &mut page),
        Err(FwStatus::INVALID_GUEST)
    );
    assert_eq!(psp.launch_update_vmsa(&page), Err(FwStatus::INVALID_GUEST));
    assert_eq!(
        psp.launch_finish(None, false, [0; 32]),
        Err(FwStatus::INVALID_GUEST)
    );
    assert_eq!(
        psp.guest_request(&[0; PAGE_SIZE], &mut [0; PAGE_SIZE]),
        FwStatus::INVALID_GUEST
    );
    psp.launch_start(0x3_0000, [0; 16]).unwrap();
    assert_eq!(psp.state(), LaunchState::Launching);
    assert_eq!(
        psp.launch_start(0x3_0000, [0; 16]),
        Err(FwStatus::INVALID_GUEST_STATE)
    );
    assert_eq!(
        psp.guest_request(&[0; PAGE_SIZE], &mut [0; PAGE_SIZE]),
        FwStatus::INVALID_GUEST_STATE
    );
    psp.launch_update(0x1000, PageType::Normal, &mut page)
        .unwrap();
    let digest = psp.measurement();
    // The same GPA twice, unaligned and too-high GPAs, VMSA through the page path.
    for (gpa, t, status) in [
        (0x1000, PageType::Normal, FwStatus::INVALID_PAGE_STATE),
        (0x1000, PageType::Zero, FwStatus::INVALID_PAGE_STATE),
        (0x2001, PageType::Normal, FwStatus::INVALID_ADDRESS),
        (1 << 52, PageType::Normal, FwStatus::INVALID_ADDRESS),
        (0x2000, PageType::Vmsa, FwStatus::INVALID_PARAM),
    ] {
        assert_eq!(
            psp.launch_update(gpa, t, &mut page),
            Err(status),
            "{gpa:#x} {t:?}"
        );
    }
    assert_eq!(psp.measurement(), digest, "refused pages leave the digest");
    psp.launch_finish(None, false, [0; 32]).unwrap();
    assert_eq!(psp.state(), LaunchState::Running);
    assert_eq!(
        psp.launch_update(0x5000, PageType::Normal, &mut page),
        Err(FwStatus::INVALID_GUEST_STATE)
    );
    assert_eq!(
        psp.launch_update_vmsa(&page),
        Err(FwStatus::INVALID_GUEST_STATE)
    );
    assert_eq!(
        psp.launch_finish(None, false, [0; 32]),
        Err(FwStatus::INVALID_GUEST_STATE)
    );
    assert_eq!(
        psp.launch_start(0x3_0000, [0; 16]),
        Err(FwStatus::INVALID_GUEST_STATE)
    );
    assert_eq!(psp.measurement(), digest);
}

#[test]
fn guest_policy_checks() {
    for (policy, status) in [
        (0x1_0000, FwStatus::INVALID_PARAM), // bit 17 (must be one) clear
        (0x3_0000 | 1 << 26, FwStatus::INVALID_PARAM), // reserved bit
        (0x3_0000 | 1 << 63, FwStatus::INVALID_PARAM),
        (0x2_0000, FwStatus::POLICY_FAILURE), // SMT not allowed, the platform has SMT
        (0x3_013B, FwStatus::POLICY_FAILURE), // ABI 1.59 > firmware 1.58
        (0x3_0200, FwStatus::POLICY_FAILURE), // ABI 2.0
        (0x3_0000 | 1 << 23, FwStatus::POLICY_FAILURE), // RAPL_DIS
        (0x3_0000 | 1 << 24, FwStatus::POLICY_FAILURE), // CIPHERTEXT_HIDING
    ] {
        let mut psp = SimPsp::new(root());
        assert_eq!(
            psp.launch_start(policy, [0; 16]),
            Err(status),
            "{policy:#x}"
        );
        assert_eq!(psp.state(), LaunchState::NoGuest);
        // A refused start leaves no guest: a good one still works.
        psp.launch_start(0x3_0000, [0; 16]).unwrap();
    }
    for policy in [
        0x3_0000u64,
        0x3_013A,           // ABI 1.58
        0x3_0000 | 1 << 19, // DEBUG
        0x3_0000 | 1 << 20, // SINGLE_SOCKET: the platform has one socket
        0x3_0000 | 1 << 18 | 1 << 21 | 1 << 22 | 1 << 25,
    ] {
        let mut psp = SimPsp::new(root());
        assert_eq!(psp.launch_start(policy, [0; 16]), Ok(()), "{policy:#x}");
        assert_eq!(psp.policy(), policy);
    }
}

#[test]
fn zero_unmeasured_and_secrets_pages() {
    let mut psp = SimPsp::new(root());
    psp.launch_start(0x3_0000, [0x77; 16]).unwrap();
    let mut zero = [0xEE; PAGE_SIZE];
    psp.launch_update(0x1000, PageType::Zero, &mut zero)
        .unwrap();
    assert_eq!(zero, [0; PAGE_SIZE], "a ZERO page becomes zeros");
    let mut unmeasured = [0xEE; PAGE_SIZE];
    psp.launch_update(0x2000, PageType::Unmeasured, &mut unmeasured)
        .unwrap();
    assert_eq!(unmeasured, [0xEE; PAGE_SIZE]);
    let mut secrets = [0xEE; PAGE_SIZE];
    psp.launch_update(0x3000, PageType::Secrets, &mut secrets)
        .unwrap();
    let mut expected = LaunchDigest::new();
    expected.update_page(PageType::Zero, 0x1000, None).unwrap();
    expected
        .update_page(PageType::Unmeasured, 0x2000, None)
        .unwrap();
    expected
        .update_page(PageType::Secrets, 0x3000, None)
        .unwrap();
    assert_eq!(psp.measurement(), expected.digest());

    assert_eq!(&secrets[0..4], &secrets::SECRETS_PAGE_VERSION.to_le_bytes());
    assert_eq!(&secrets[8..12], &0x00A1_0F11u32.to_le_bytes(), "Genoa FMS");
    assert_eq!(&secrets[0x10..0x20], &[0x77; 16], "GOSVW");
    let keys = *psp.vmpcks();
    for (i, at) in secrets::SECRETS_VMPCK.iter().enumerate() {
        assert_eq!(&secrets[*at..*at + 32], &keys[i]);
        assert_ne!(keys[i], [0; 32]);
    }
    assert_eq!(
        keys.iter().collect::<std::collections::HashSet<_>>().len(),
        4,
        "four different keys"
    );
    assert!(secrets[0xA0..].iter().all(|&b| b == 0));
    // A second launch gets fresh keys.
    let mut other = SimPsp::new(root());
    other.launch_start(0x3_0000, [0; 16]).unwrap();
    assert_ne!(other.vmpcks(), &keys);
}

/// A CPUID page with `count` entries, the first being leaf 1 with ECX `ecx`.
fn cpuid_page(count: u32, ecx: u32) -> [u8; PAGE_SIZE] {
    let mut p = [0u8; PAGE_SIZE];
    p[0..4].copy_from_slice(&count.to_le_bytes());
    for i in 0..count.min(64) as usize {
        let at = 16 + 48 * i;
        p[at..at + 4].copy_from_slice(&(0x8000_0000u32 + i as u32).to_le_bytes());
    }
    if count > 0 {
        p[16..20].copy_from_slice(&1u32.to_le_bytes());
        p[16 + 32..16 + 36].copy_from_slice(&ecx.to_le_bytes());
    }
    p
}

#[test]
fn cpuid_page_is_corrected_and_the_retry_succeeds_with_the_same_digest() {
    let mut psp = SimPsp::new(root());
    psp.launch_start(0x3_0000, [0; 16]).unwrap();
    let before = psp.measurement();
    let bad_ecx = 0xFEF8_3203 | 1 << 24;
    let mut page = cpuid_page(3, bad_ecx);
    let original = page;
    assert_eq!(
        psp.launch_update(0x6000, PageType::Cpuid, &mut page),
        Err(FwStatus::INVALID_PARAM)
    );
    assert_eq!(
        psp.measurement(),
        before,
        "a refused CPUID page is not measured"
    );
    assert_eq!(psp.page_counts()["cpuid"], 0);
    assert_ne!(page, original, "the page holds the corrected table");
    let ecx = u32::from_le_bytes(page[48..52].try_into().unwrap());
    assert_eq!(ecx, bad_ecx & !(1 << 24));
    assert_eq!(page[52..], original[52..], "only the bad bit changed");
    // The retry at the same GPA with the corrected page.
    let corrected = page;
    psp.launch_update(0x6000, PageType::Cpuid, &mut page)
        .unwrap();
    assert_eq!(page, corrected, "an accepted CPUID page is left as it is");
    let mut expected = LaunchDigest::with_seed(before);
    expected.update_page(PageType::Cpuid, 0x6000, None).unwrap();
    assert_eq!(psp.measurement(), expected.digest());

    // COUNT above 64: refused, the page unchanged, nothing measured.
    let mut too_many = cpuid_page(65, 0);
    let original = too_many;
    let digest = psp.measurement();
    assert_eq!(
        psp.launch_update(0x7000, PageType::Cpuid, &mut too_many),
        Err(FwStatus::INVALID_PARAM)
    );
    assert_eq!(too_many, original);
    assert_eq!(psp.measurement(), digest);
    // 64 entries are fine.
    psp.launch_update(0x7000, PageType::Cpuid, &mut cpuid_page(64, 0))
        .unwrap();
}

#[test]
fn report_request_status_values() {
    let mut psp = launched(&[], [0; 32]);
    let keys = *psp.vmpcks();
    let mut seqno = [1u64; 4];
    let mut ask = |psp: &mut SimPsp, vmpck: usize, req: Vec<u8>| -> u32 {
        let mut resp = [0u8; PAGE_SIZE];
        let s = seqno[vmpck];
        let page = request(&keys[vmpck], vmpck as u8, s, 5, &req);
        assert_eq!(psp.guest_request(&page, &mut resp), FwStatus::SUCCESS);
        seqno[vmpck] += 2;
        let body = open_response(&keys[vmpck], &resp, s + 1);
        assert_eq!(body.len(), 0x20 + 1184);
        u32::from_le_bytes(body[..4].try_into().unwrap())
    };
    assert_eq!(ask(&mut psp, 0, report_req([0; 64], 0)), 0);
    assert_eq!(ask(&mut psp, 0, report_req([0; 64], 3)), 0);
    assert_eq!(
        ask(&mut psp, 0, report_req([0; 64], 4)),
        0x16,
        "VMPL above 3"
    );
    assert_eq!(
        ask(&mut psp, 2, report_req([0; 64], 1)),
        0x16,
        "VMPL below the requester's"
    );
    assert_eq!(ask(&mut psp, 2, report_req([0; 64], 2)), 0);
    let mut key_sel = report_req([0; 64], 0);
    key_sel[0x44] = 1;
    assert_eq!(ask(&mut psp, 0, key_sel.clone()), 0, "KEY_SEL VCEK");
    key_sel[0x44] = 2;
    assert_eq!(
        ask(&mut psp, 0, key_sel.clone()),
        0x27,
        "KEY_SEL VLEK: none installed"
    );
    key_sel[0x44] = 3;
    assert_eq!(ask(&mut psp, 0, key_sel.clone()), 0x16);
    key_sel[0x44] = 4;
    assert_eq!(ask(&mut psp, 0, key_sel), 0x16, "KEY_SEL reserved bits");
    let mut reserved = report_req([0; 64], 0);
    reserved[0x5F] = 1;
    assert_eq!(ask(&mut psp, 0, reserved), 0x16);
    // A longer message is fine (only the first 96 bytes are the request); a shorter one
    // is refused before any response.
    let mut long = report_req([0; 64], 0);
    long.extend_from_slice(&[0; 32]);
    assert_eq!(ask(&mut psp, 0, long), 0);
    let short = request(&keys[0], 0, seqno[0], 5, &[0u8; 95]);
    assert_eq!(
        psp.guest_request(&short, &mut [0; PAGE_SIZE]),
        FwStatus::INVALID_PARAM
    );
    assert_eq!(psp.next_seqno(0), Some(seqno[0]));
}

#[test]
fn report_fields_of_a_vmpl2_request() {
    let mut psp = launched(&[], [0x42; 32]);
    let key = psp.vmpcks()[2];
    let page = request(&key, 2, 1, 5, &report_req([9; 64], 3));
    let mut resp = [0u8; PAGE_SIZE];
    assert_eq!(psp.guest_request(&page, &mut resp), FwStatus::SUCCESS);
    let body = open_response(&key, &resp, 2);
    assert_eq!(resp[0x3C], 2, "response MSG_VMPCK");
    let r = AttestationReport::from_bytes(&body[0x20..]).unwrap();
    let root = root();
    assert_eq!(r.vmpl, 3);
    assert_eq!(r.signature_algo, 1);
    assert_eq!(r.current_tcb, root.tcb());
    assert_eq!(r.reported_tcb, root.tcb());
    assert_eq!(r.committed_tcb, root.tcb());
    assert_eq!(r.launch_tcb, root.tcb());
    assert_eq!(r.platform_info, SIM_PLATFORM_INFO);
    assert_eq!(r.current_version, SIM_FIRMWARE);
    assert_eq!(r.committed_version, SIM_FIRMWARE);
    assert_eq!(r.cpuid_generation(), Some(Generation::Genoa));
    assert_eq!(r.id_key_digest, [0; 48]);
    assert_eq!(r.author_key_digest, [0; 48]);
    assert!(!r.key_info.author_key_en);
    assert_eq!(r.report_id_ma, [0xFF; 32]);
    assert_ne!(r.report_id, [0; 32]);
    assert!(r.reserved_violations().is_empty());
    // The report ID is the guest's: the same for every report of this launch.
    let page = request(&key, 2, 3, 5, &report_req([9; 64], 2));
    assert_eq!(psp.guest_request(&page, &mut resp), FwStatus::SUCCESS);
    let again = AttestationReport::from_bytes(&open_response(&key, &resp, 4)[0x20..]).unwrap();
    assert_eq!(again.report_id, r.report_id);
    assert_eq!(again.vmpl, 2);
}

mod id_block {
    use super::*;
    use crate::id_block::{public_key_digest, sign, IdBlock, ID_AUTH_SIZE, ID_BLOCK_SIZE};
    use p384::ecdsa::SigningKey;

    struct Ids {
        id_key: SigningKey,
        author_key: SigningKey,
    }

    impl Ids {
        fn new() -> Self {
            Ids {
                id_key: SigningKey::random(&mut rand_core::OsRng),
                author_key: SigningKey::random(&mut rand_core::OsRng),
            }
        }

        fn block(ld: [u8; 48], policy: u64) -> IdBlock {
            IdBlock {
                family_id: [0xF1; 16],
                image_id: [0x1D; 16],
                guest_svn: 7,
                ..IdBlock::new(ld, policy)
            }
        }

        /// The ID block and auth bytes, signed by `crate::id_block`.
        fn signed(
            &self,
            block: &IdBlock,
            author: bool,
        ) -> ([u8; ID_BLOCK_SIZE], [u8; ID_AUTH_SIZE]) {
            let signed = sign(block, &self.id_key, author.then_some(&self.author_key));
            assert_eq!(signed.author_key_enabled, author);
            (*signed.id_block, *signed.id_auth)
        }
    }

    fn started() -> SimPsp {
        let mut psp = SimPsp::new(root());
        psp.launch_start(0x3_0000, [0; 16]).unwrap();
        psp.launch_update(0x1000, PageType::Normal, &mut [3; PAGE_SIZE])
            .unwrap();
        psp
    }

    #[test]
    fn accepted_id_block_goes_into_the_report() {
        let ids = Ids::new();
        let mut psp = started();
        let (block, auth) = ids.signed(&Ids::block(psp.measurement(), 0x3_0000), true);
        psp.launch_finish(Some((&block, &auth)), true, [1; 32])
            .unwrap();
        let key = psp.vmpcks()[0];
        let mut resp = [0u8; PAGE_SIZE];
        let page = request(&key, 0, 1, 5, &report_req([0; 64], 0));
        assert_eq!(psp.guest_request(&page, &mut resp), FwStatus::SUCCESS);
        let r = AttestationReport::from_bytes(&open_response(&key, &resp, 2)[0x20..]).unwrap();
        assert_eq!(r.family_id, [0xF1; 16]);
        assert_eq!(r.image_id, [0x1D; 16]);
        assert_eq!(r.guest_svn, 7);
        assert!(r.key_info.author_key_en);
        // The digests are SHA-384 of the key fields as given, which is what
        // `public_key_digest` (and so `cloister id-block`) predicts from the keys.
        assert_eq!(
            r.id_key_digest,
            crate::launch::digest::sha384(&auth[0x240..0x644])
        );
        assert_eq!(
            r.id_key_digest,
            public_key_digest(ids.id_key.verifying_key())
        );
        assert_eq!(
            r.author_key_digest,
            crate::launch::digest::sha384(&auth[0x880..0xC84])
        );
        assert_eq!(
            r.author_key_digest,
            public_key_digest(ids.author_key.verifying_key())
        );
        // Without the author key.
        let mut psp = started();
        let (block, auth) = ids.signed(&Ids::block(psp.measurement(), 0x3_0000), false);
        psp.launch_finish(Some((&block, &auth)), false, [1; 32])
            .unwrap();
    }

    /// A byte flipped anywhere in a signed ID block (but VERSION), or in the signatures and
    /// keys of its auth structure, makes the firmware refuse it as BAD_SIGNATURE.
    #[test]
    fn a_flipped_byte_is_a_bad_signature() {
        let ids = Ids::new();
        let ld = started().measurement();
        let (block, auth) = ids.signed(&Ids::block(ld, 0x3_0000), true);
        let finish = |block: &[u8; ID_BLOCK_SIZE], auth: &[u8; ID_AUTH_SIZE]| {
            let mut psp = started();
            psp.launch_finish(Some((block, auth)), true, [0; 32])
        };
        assert_eq!(finish(&block, &auth), Ok(()));
        for at in 0..ID_BLOCK_SIZE {
            let mut flipped = block;
            flipped[at] ^= 0x80;
            // VERSION is checked before the signature.
            let expected = if (0x50..0x54).contains(&at) {
                FwStatus::INVALID_PARAM
            } else {
                FwStatus::BAD_SIGNATURE
            };
            assert_eq!(
                finish(&flipped, &auth),
                Err(expected),
                "ID block byte {at:#x}"
            );
        }
        // R and S of both signatures, QX and QY of both keys: first and last byte.
        for at in [
            0x40,
            0x40 + 47,
            0x88,
            0x88 + 47,
            0x244,
            0x244 + 47,
            0x28C,
            0x28C + 47,
            0x680,
            0x680 + 47,
            0x6C8,
            0x884,
            0x8CC + 47,
        ] {
            let mut flipped = auth;
            flipped[at] ^= 0x80;
            assert_eq!(
                finish(&block, &flipped),
                Err(FwStatus::BAD_SIGNATURE),
                "ID auth byte {at:#x}"
            );
        }
    }

    #[test]
    fn refused_id_blocks() {
        let ids = Ids::new();
        let psp = started();
        let ld = psp.measurement();
        let good_block = Ids::block(ld, 0x3_0000);
        let (good, good_auth) = ids.signed(&good_block, true);
        type Case = (
            &'static str,
            [u8; ID_BLOCK_SIZE],
            [u8; ID_AUTH_SIZE],
            bool,
            FwStatus,
        );
        let mut cases: Vec<Case> = Vec::new();
        let (wrong_ld, wrong_ld_auth) = ids.signed(&Ids::block([0xAA; 48], 0x3_0000), true);
        cases.push((
            "LD is not the digest",
            wrong_ld,
            wrong_ld_auth,
            true,
            FwStatus::BAD_MEASUREMENT,
        ));
        let (wrong_policy, wrong_policy_auth) =
            ids.signed(&Ids::block(ld, 0x3_0000 | 1 << 19), true);
        cases.push((
            "POLICY differs",
            wrong_policy,
            wrong_policy_auth,
            true,
            FwStatus::POLICY_FAILURE,
        ));
        // The signature is over another ID block (GUEST_SVN 8): the one given was altered.
        let (_, other_auth) = ids.signed(
            &IdBlock {
                guest_svn: 8,
                ..good_block
            },
            true,
        );
        cases.push((
            "ID block altered after signing",
            good,
            other_auth,
            true,
            FwStatus::BAD_SIGNATURE,
        ));
        let mut bad_author = good_auth;
        bad_author[0x680] ^= 1;
        cases.push((
            "author signature",
            good,
            bad_author,
            true,
            FwStatus::BAD_SIGNATURE,
        ));
        let mut algo = good_auth;
        algo[0] = 2;
        cases.push(("ID_KEY_ALGO", good, algo, true, FwStatus::INVALID_PARAM));
        let (version, version_auth) = ids.signed(
            &IdBlock {
                version: 2,
                ..good_block
            },
            true,
        );
        cases.push((
            "VERSION",
            version,
            version_auth,
            true,
            FwStatus::INVALID_PARAM,
        ));
        let mut curve = good_auth;
        curve[0x240] = 3;
        cases.push(("ID key curve", good, curve, true, FwStatus::BAD_SIGNATURE));
        let (_, no_author) = ids.signed(&good_block, false);
        cases.push((
            "AUTHOR_KEY_EN without an author key",
            good,
            no_author,
            true,
            FwStatus::INVALID_PARAM,
        ));
        for (what, block, auth, author, status) in cases {
            let mut psp = started();
            assert_eq!(
                psp.launch_finish(Some((&block, &auth)), author, [0; 32]),
                Err(status),
                "{what}"
            );
            assert_eq!(
                psp.state(),
                LaunchState::Launching,
                "{what}: FINISH changed nothing"
            );
        }
        let mut psp = started();
        assert_eq!(
            psp.launch_finish(None, true, [0; 32]),
            Err(FwStatus::INVALID_PARAM),
            "AUTHOR_KEY_EN without an ID block"
        );
        psp.launch_finish(Some((&good, &good_auth)), true, [0; 32])
            .unwrap();
    }
}
