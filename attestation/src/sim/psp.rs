//! The simulated AMD secure processor: one guest's launch (SNP_LAUNCH_START, _UPDATE,
//! _FINISH) and its guest messages (SNP_GUEST_REQUEST).

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use rand_core::{OsRng, RngCore};
use zeroize::Zeroizing;

use super::cpuid::{self, CpuidRejection};
use super::message::{self, msg_type, MsgHeader};
use super::secrets::{secrets_page, VMPCK_SIZE};
use super::{FwStatus, SimRoot};
use crate::id_block::{
    IdAuth, IdBlock, ALGO_ECDSA_P384_SHA384, ID_AUTH_SIZE, ID_BLOCK_SIZE, ID_BLOCK_VERSION,
};
use crate::launch::digest::{LaunchDigest, PageType, LD_SIZE, PAGE_SIZE, VMSA_GPA};
use crate::report::{
    AttestationReport, Cpuid, FirmwareVersion, KeyInfo, SigningKey, REPORT_SIZE, SIGNED_SIZE,
    SIG_ALGO_ECDSA_P384_SHA384,
};

/// The firmware ABI version the simulated firmware implements: 1.58 (the first with
/// version-5 reports), build 10.
pub const SIM_FIRMWARE: FirmwareVersion = FirmwareVersion {
    build: 10,
    minor: 58,
    major: 1,
};
/// PLATFORM_INFO of the simulated platform: SMT enabled (bit 0), ECC memory (bit 2), the
/// memory alias check complete (bit 5). TSME, RAPL disabling and ciphertext hiding are off.
pub const SIM_PLATFORM_INFO: u64 = 0x25;
/// The version of the reports the simulated firmware writes.
pub const SIM_REPORT_VERSION: u32 = 5;

/// Guest POLICY bits (SNP-FACTS §5.2).
const POLICY_SMT: u64 = 1 << 16;
const POLICY_RESERVED_MBO: u64 = 1 << 17;
const POLICY_RAPL_DIS: u64 = 1 << 23;
const POLICY_CIPHERTEXT_HIDING: u64 = 1 << 24;
/// Bits 63:26 are reserved, must be zero.
const POLICY_DEFINED: u64 = (1 << 26) - 1;

/// Size of MSG_REPORT_REQ.
const REPORT_REQ_SIZE: usize = 0x60;
/// Size of MSG_REPORT_RSP: STATUS, REPORT_SIZE, 24 reserved bytes, the report.
const REPORT_RSP_SIZE: usize = 0x20 + REPORT_SIZE;

/// Where the guest is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LaunchState {
    /// No SNP_LAUNCH_START yet: there is no guest context.
    NoGuest,
    /// Between SNP_LAUNCH_START and SNP_LAUNCH_FINISH: pages can be added.
    Launching,
    /// After SNP_LAUNCH_FINISH: the guest runs and may send guest messages.
    Running,
}

/// What an accepted ID block put into the guest context.
#[derive(Debug, Clone, Copy)]
struct Identity {
    family_id: [u8; 16],
    image_id: [u8; 16],
    guest_svn: u32,
    id_key_digest: [u8; LD_SIZE],
    author_key_digest: Option<[u8; LD_SIZE]>,
}

/// One guest's view of the simulated AMD secure processor. It keeps the launch digest as
/// the firmware does, from the bytes it is given; enforces the order of the launch
/// commands and the guest policy; checks and corrects the CPUID page; writes the secrets
/// page with VMPCKs fresh from the operating system's CSPRNG; and answers guest messages
/// with version-5 attestation reports signed by the simulation root's VCEK.
///
/// Nothing about memory encryption is simulated: the caller runs the guest as a plain
/// KVM guest.
pub struct SimPsp {
    root: Arc<SimRoot>,
    state: LaunchState,
    policy: u64,
    gosvw: [u8; 16],
    digest: LaunchDigest,
    vmpcks: Zeroizing<[[u8; VMPCK_SIZE]; 4]>,
    /// The last MSG_SEQNO of each VMPCK: the response's of the last exchange, 0 at first.
    last_seqno: [u64; 4],
    report_id: [u8; 32],
    /// GPAs added by LAUNCH_UPDATE (the RMP would hold them as assigned).
    added: HashSet<u64>,
    identity: Option<Identity>,
    host_data: [u8; 32],
}

impl std::fmt::Debug for SimPsp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimPsp")
            .field("state", &self.state)
            .field("policy", &format_args!("{:#x}", self.policy))
            .field("measurement", &hex::encode(self.digest.digest()))
            .field("last_seqno", &self.last_seqno)
            .finish_non_exhaustive()
    }
}

fn read<const N: usize>(bytes: &[u8], at: usize) -> [u8; N] {
    let mut out = [0u8; N];
    if let Some(src) = bytes.get(at..at + N) {
        out.copy_from_slice(src);
    }
    out
}

fn read_u32(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(read(bytes, at))
}

impl SimPsp {
    /// A secure processor with the simulation root `root`, and no guest yet.
    pub fn new(root: Arc<SimRoot>) -> SimPsp {
        SimPsp {
            root,
            state: LaunchState::NoGuest,
            policy: 0,
            gosvw: [0; 16],
            digest: LaunchDigest::new(),
            vmpcks: Zeroizing::new([[0; VMPCK_SIZE]; 4]),
            last_seqno: [0; 4],
            report_id: [0; 32],
            added: HashSet::new(),
            identity: None,
            host_data: [0; 32],
        }
    }

    /// SNP_LAUNCH_START: creates the guest context with `policy` and the guest-OS-visible
    /// workarounds `gosvw`, fresh VMPCKs and a fresh REPORT_ID. Once only
    /// (INVALID_GUEST_STATE after). The policy: bits 63:26 set or bit 17 clear is
    /// INVALID_PARAM; an ABI above the firmware's 1.58, SMT not allowed (the simulated
    /// platform has SMT on), RAPL_DIS or CIPHERTEXT_HIDING required (it has neither) is
    /// POLICY_FAILURE. The simulated platform has one socket, so SINGLE_SOCKET is honoured.
    pub fn launch_start(&mut self, policy: u64, gosvw: [u8; 16]) -> Result<(), FwStatus> {
        if self.state != LaunchState::NoGuest {
            return Err(FwStatus::INVALID_GUEST_STATE);
        }
        if policy & !POLICY_DEFINED != 0 || policy & POLICY_RESERVED_MBO == 0 {
            return Err(FwStatus::INVALID_PARAM);
        }
        let abi = ((policy >> 8) & 0xFF, policy & 0xFF);
        let firmware = (u64::from(SIM_FIRMWARE.major), u64::from(SIM_FIRMWARE.minor));
        let smt_on = SIM_PLATFORM_INFO & 1 != 0;
        let rapl_disabled = SIM_PLATFORM_INFO & (1 << 3) != 0;
        let ciphertext_hiding = SIM_PLATFORM_INFO & (1 << 4) != 0;
        if abi > firmware
            || (smt_on && policy & POLICY_SMT == 0)
            || (policy & POLICY_RAPL_DIS != 0 && !rapl_disabled)
            || (policy & POLICY_CIPHERTEXT_HIDING != 0 && !ciphertext_hiding)
        {
            return Err(FwStatus::POLICY_FAILURE);
        }
        let mut vmpcks = Zeroizing::new([[0u8; VMPCK_SIZE]; 4]);
        for key in vmpcks.iter_mut() {
            OsRng.fill_bytes(key);
        }
        let mut report_id = [0u8; 32];
        OsRng.fill_bytes(&mut report_id);
        self.state = LaunchState::Launching;
        self.policy = policy;
        self.gosvw = gosvw;
        self.vmpcks = vmpcks;
        self.report_id = report_id;
        self.digest = LaunchDigest::new();
        Ok(())
    }

    fn require_launching(&self) -> Result<(), FwStatus> {
        match self.state {
            LaunchState::NoGuest => Err(FwStatus::INVALID_GUEST),
            LaunchState::Running => Err(FwStatus::INVALID_GUEST_STATE),
            LaunchState::Launching => Ok(()),
        }
    }

    /// SNP_LAUNCH_UPDATE of one 4 KiB page at `gpa`.
    ///
    /// * NORMAL: measured with its contents.
    /// * ZERO: the page becomes zeros; measured with zero contents.
    /// * UNMEASURED: kept as given; measured with zero contents.
    /// * SECRETS: `page` becomes the secrets page (version, FMS, GOSVW, VMPCK0..3);
    ///   measured with zero contents.
    /// * CPUID: checked by the simulated firmware's rules (`sim::cpuid`); when an entry is
    ///   refused, `page` receives the corrected table, the digest is not changed, the GPA
    ///   stays free, and the result is INVALID_PARAM, so the caller can retry with the
    ///   corrected page. A COUNT above 64 is INVALID_PARAM with the page unchanged.
    ///
    /// Refusals: no guest context (INVALID_GUEST), after LAUNCH_FINISH
    /// (INVALID_GUEST_STATE), a GPA not 4 KiB aligned or above 52 bits (INVALID_ADDRESS),
    /// a GPA added before (INVALID_PAGE_STATE), page type VMSA (INVALID_PARAM: use
    /// [`SimPsp::launch_update_vmsa`]). A refused page leaves the digest unchanged.
    pub fn launch_update(
        &mut self,
        gpa: u64,
        page_type: PageType,
        page: &mut [u8; PAGE_SIZE],
    ) -> Result<(), FwStatus> {
        self.require_launching()?;
        if !gpa.is_multiple_of(PAGE_SIZE as u64) || gpa >> 52 != 0 {
            return Err(FwStatus::INVALID_ADDRESS);
        }
        if page_type == PageType::Vmsa {
            return Err(FwStatus::INVALID_PARAM);
        }
        if self.added.contains(&gpa) {
            return Err(FwStatus::INVALID_PAGE_STATE);
        }
        match page_type {
            PageType::Zero => page.fill(0),
            PageType::Secrets => {
                *page = secrets_page(self.root.platform().fms(), &self.gosvw, &self.vmpcks);
            }
            PageType::Cpuid => match cpuid::check_and_correct(page) {
                Ok(()) => {}
                Err(CpuidRejection::CountTooLarge(count)) => {
                    log::debug!("sim PSP: CPUID page at {gpa:#x}: COUNT {count} is above 64");
                    return Err(FwStatus::INVALID_PARAM);
                }
                Err(CpuidRejection::Corrected(problems)) => {
                    log::debug!(
                        "sim PSP: CPUID page at {gpa:#x} refused and corrected: {}",
                        problems.join("; ")
                    );
                    return Err(FwStatus::INVALID_PARAM);
                }
            },
            PageType::Normal | PageType::Unmeasured | PageType::Vmsa => {}
        }
        self.digest
            .update_page(page_type, gpa, Some(page.as_slice()))
            .map_err(|_| FwStatus::INVALID_PARAM)?;
        self.added.insert(gpa);
        Ok(())
    }

    /// SNP_LAUNCH_UPDATE of one vCPU's VMSA page, measured at GPA 0xFFFF_FFFF_F000 (as KVM
    /// issues it at LAUNCH_FINISH, once per vCPU in vCPU order).
    pub fn launch_update_vmsa(&mut self, page: &[u8; PAGE_SIZE]) -> Result<(), FwStatus> {
        self.require_launching()?;
        self.digest
            .update_page(PageType::Vmsa, VMSA_GPA, Some(page.as_slice()))
            .map_err(|_| FwStatus::INVALID_PARAM)
    }

    /// SNP_LAUNCH_FINISH: ends the launch (no more pages), with an optional ID block and
    /// ID authentication structure, AUTHOR_KEY_EN and HOST_DATA. Once only.
    ///
    /// An ID block is checked as the ABI describes: VERSION 1 and ID_KEY_ALGO (and, with
    /// `auth_key_en`, AUTH_KEY_ALGO) 1 = ECDSA P-384 SHA-384, else INVALID_PARAM; the ID
    /// key's signature of the ID block and, with `auth_key_en`, the author key's signature
    /// of the ID key (ECDSA P-384, [`crate::id_block`]), else BAD_SIGNATURE; LD equal to
    /// the launch digest, else BAD_MEASUREMENT; POLICY equal to the guest's, else
    /// POLICY_FAILURE. The report then carries FAMILY_ID, IMAGE_ID, GUEST_SVN, the SHA-384
    /// of the ID key (and of the author key) in ABI format. `auth_key_en` without
    /// an ID block is INVALID_PARAM. A refused FINISH changes nothing.
    pub fn launch_finish(
        &mut self,
        id_block: Option<(&[u8; ID_BLOCK_SIZE], &[u8; ID_AUTH_SIZE])>,
        auth_key_en: bool,
        host_data: [u8; 32],
    ) -> Result<(), FwStatus> {
        self.require_launching()?;
        let identity = match id_block {
            None if auth_key_en => return Err(FwStatus::INVALID_PARAM),
            None => None,
            Some((block, auth)) => Some(self.check_id_block(block, auth, auth_key_en)?),
        };
        self.identity = identity;
        self.host_data = host_data;
        self.state = LaunchState::Running;
        Ok(())
    }

    fn check_id_block(
        &self,
        block: &[u8; ID_BLOCK_SIZE],
        auth: &[u8; ID_AUTH_SIZE],
        auth_key_en: bool,
    ) -> Result<Identity, FwStatus> {
        let fields = IdBlock::from_bytes(block);
        let auth = IdAuth::from_bytes(auth);
        if fields.version != ID_BLOCK_VERSION
            || auth.id_key_algo != ALGO_ECDSA_P384_SHA384
            || (auth_key_en && auth.auth_key_algo != ALGO_ECDSA_P384_SHA384)
        {
            return Err(FwStatus::INVALID_PARAM);
        }
        if !auth.id_block_signature_valid(block) {
            return Err(FwStatus::BAD_SIGNATURE);
        }
        if auth_key_en && !auth.id_key_signature_valid() {
            return Err(FwStatus::BAD_SIGNATURE);
        }
        if fields.ld != self.digest.digest() {
            return Err(FwStatus::BAD_MEASUREMENT);
        }
        if fields.policy != self.policy {
            return Err(FwStatus::POLICY_FAILURE);
        }
        Ok(Identity {
            family_id: fields.family_id,
            image_id: fields.image_id,
            guest_svn: fields.guest_svn,
            id_key_digest: auth.id_key_digest(),
            author_key_digest: auth_key_en.then(|| auth.author_key_digest()),
        })
    }

    /// The launch digest so far (after LAUNCH_FINISH: the report's MEASUREMENT).
    pub fn measurement(&self) -> [u8; LD_SIZE] {
        self.digest.digest()
    }

    /// Pages measured so far, by page type name ("normal", "vmsa", "zero", ...).
    pub fn page_counts(&self) -> BTreeMap<&'static str, u64> {
        PageType::ALL
            .into_iter()
            .map(|t| (t.name(), self.digest.page_count(t)))
            .collect()
    }

    /// Where the guest is in its life.
    pub fn state(&self) -> LaunchState {
        self.state
    }

    /// The guest policy given to LAUNCH_START (0 before).
    pub fn policy(&self) -> u64 {
        self.policy
    }

    /// The simulation root that signs this PSP's reports.
    pub fn root(&self) -> &Arc<SimRoot> {
        &self.root
    }

    /// For tests of the guest side: the VMPCKs this guest's secrets page holds (all zero
    /// before LAUNCH_START).
    pub fn vmpcks(&self) -> &[[u8; VMPCK_SIZE]; 4] {
        &self.vmpcks
    }

    /// The MSG_SEQNO the next request with VMPCK `vmpck` must carry (`None` for an index
    /// above 3 or when the counter is exhausted).
    pub fn next_seqno(&self, vmpck: usize) -> Option<u64> {
        self.last_seqno.get(vmpck)?.checked_add(1)
    }

    /// SNP_GUEST_REQUEST: answers the guest message in `request` (a 4 KiB page) in
    /// `response`, returning the firmware status (SUCCESS when a response was written).
    ///
    /// The request is refused, the response page left untouched and the sequence number
    /// not advanced, when: the guest is not running (INVALID_GUEST before LAUNCH_START,
    /// INVALID_GUEST_STATE before LAUNCH_FINISH); the header is malformed (ALGO not 1,
    /// HDR_VERSION not 1, HDR_SIZE not 0x60, MSG_VMPCK above 3, MSG_SIZE 0 or above 4000,
    /// reserved bytes set: INVALID_PARAM); MSG_SEQNO is not exactly one more than the last
    /// sequence number of that VMPCK (a replayed or stale message: INVALID_PARAM); the
    /// response's sequence number would overflow (AEAD_OFLOW); the AES-256-GCM tag does not
    /// verify with `VMPCK[MSG_VMPCK]` (INVALID_PARAM); the message type is a request the
    /// simulator does not implement (UNSUPPORTED) or not a request (INVALID_PARAM);
    /// MSG_REPORT_REQ has MSG_VERSION other than 1 or is shorter than 96 bytes
    /// (INVALID_PARAM).
    ///
    /// MSG_REPORT_REQ is answered with MSG_REPORT_RSP (same MSG_VERSION, MSG_SEQNO + 1,
    /// encrypted with the same VMPCK). Its STATUS is INVALID_PARAM for a VMPL above 3 or
    /// below the requester's (the VMPCK index), reserved bytes or KEY_SEL 3, INVALID_KEY
    /// for KEY_SEL 2 (no VLEK is installed), else SUCCESS with a version-5 report signed by
    /// the VCEK. Never panics, whatever the bytes.
    pub fn guest_request(
        &mut self,
        request: &[u8; PAGE_SIZE],
        response: &mut [u8; PAGE_SIZE],
    ) -> FwStatus {
        match self.answer(request, response) {
            Ok(()) => FwStatus::SUCCESS,
            Err(status) => status,
        }
    }

    fn answer(
        &mut self,
        request: &[u8; PAGE_SIZE],
        response: &mut [u8; PAGE_SIZE],
    ) -> Result<(), FwStatus> {
        match self.state {
            LaunchState::NoGuest => return Err(FwStatus::INVALID_GUEST),
            LaunchState::Launching => return Err(FwStatus::INVALID_GUEST_STATE),
            LaunchState::Running => {}
        }
        let header = message::parse_header(request)?;
        let expected = self.next_seqno(header.vmpck);
        if Some(header.seqno) != expected {
            return Err(FwStatus::INVALID_PARAM);
        }
        let response_seqno = header.seqno.checked_add(1).ok_or(FwStatus::AEAD_OFLOW)?;
        let key = *self
            .vmpcks
            .get(header.vmpck)
            .ok_or(FwStatus::INVALID_PARAM)?;
        let key = Zeroizing::new(key);
        let plaintext = message::open(&key, request, &header)?;
        let payload = match header.msg_type {
            msg_type::REPORT_REQ => self.report_response(&header, &plaintext)?,
            msg_type::CPUID_REQ
            | msg_type::KEY_REQ
            | msg_type::EXPORT_REQ
            | msg_type::IMPORT_REQ
            | msg_type::ABSORB_REQ
            | msg_type::VMRK_REQ
            | msg_type::ABSORB_NOMA_REQ
            | msg_type::TSC_INFO_REQ => return Err(FwStatus::UNSUPPORTED),
            _ => return Err(FwStatus::INVALID_PARAM),
        };
        let mut out = Zeroizing::new([0u8; PAGE_SIZE]);
        message::seal(
            &key,
            response_seqno,
            header.msg_type.wrapping_add(1),
            header.msg_version,
            header.vmpck,
            payload.as_slice(),
            &mut out,
        )?;
        *response = *out;
        if let Some(last) = self.last_seqno.get_mut(header.vmpck) {
            *last = response_seqno;
        }
        Ok(())
    }

    /// MSG_REPORT_RSP for a MSG_REPORT_REQ: REPORT_DATA[64] @0, VMPL u32 @0x40, KEY_SEL
    /// u32 @0x44 (bits 1:0), reserved[24] @0x48.
    fn report_response(
        &self,
        header: &MsgHeader,
        request: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, FwStatus> {
        if header.msg_version != 1 || request.len() < REPORT_REQ_SIZE {
            return Err(FwStatus::INVALID_PARAM);
        }
        let report_data: [u8; 64] = read(request, 0);
        let vmpl = read_u32(request, 0x40);
        let key_sel = read_u32(request, 0x44);
        let reserved_zero = request
            .get(0x48..REPORT_REQ_SIZE)
            .is_some_and(|r| r.iter().all(|&b| b == 0));
        let vmpl_ok = vmpl <= 3 && (vmpl as usize) >= header.vmpck;
        let status = if !vmpl_ok || !reserved_zero || key_sel >> 2 != 0 {
            FwStatus::INVALID_PARAM
        } else {
            match key_sel & 3 {
                0 | 1 => FwStatus::SUCCESS,
                2 => FwStatus::INVALID_KEY,
                _ => FwStatus::INVALID_PARAM,
            }
        };
        let mut out = Zeroizing::new(vec![0u8; REPORT_RSP_SIZE]);
        if let Some(dst) = out.get_mut(0..4) {
            dst.copy_from_slice(&status.code().to_le_bytes());
        }
        if status.is_success() {
            let report = self.build_report(&report_data, vmpl)?;
            if let Some(dst) = out.get_mut(4..8) {
                dst.copy_from_slice(&(REPORT_SIZE as u32).to_le_bytes());
            }
            if let Some(dst) = out.get_mut(0x20..REPORT_RSP_SIZE) {
                dst.copy_from_slice(&report);
            }
        }
        Ok(out)
    }

    /// A version-5 ATTESTATION_REPORT, built with the crate's report type (so it parses
    /// with the parser `cloister verify` uses) and signed by the VCEK.
    fn build_report(
        &self,
        report_data: &[u8; 64],
        vmpl: u32,
    ) -> Result<[u8; REPORT_SIZE], FwStatus> {
        let mut template = [0u8; REPORT_SIZE];
        template[..4].copy_from_slice(&SIM_REPORT_VERSION.to_le_bytes());
        let mut report =
            AttestationReport::parse(&template).map_err(|_| FwStatus::HWERROR_PLATFORM)?;
        let root = &self.root;
        let tcb = root.tcb();
        let (family, model, stepping) = root.cpuid_fms();
        let identity = self.identity;
        report.guest_svn = identity.map_or(0, |i| i.guest_svn);
        report.policy = self.policy;
        report.family_id = identity.map_or([0; 16], |i| i.family_id);
        report.image_id = identity.map_or([0; 16], |i| i.image_id);
        report.vmpl = vmpl;
        report.signature_algo = SIG_ALGO_ECDSA_P384_SHA384;
        report.current_tcb = tcb;
        report.platform_info = SIM_PLATFORM_INFO;
        report.key_info = KeyInfo {
            author_key_en: identity.is_some_and(|i| i.author_key_digest.is_some()),
            mask_chip_key: false,
            signing_key: SigningKey::Vcek,
            reserved: 0,
        };
        report.report_data = *report_data;
        report.measurement = self.digest.digest();
        report.host_data = self.host_data;
        report.id_key_digest = identity.map_or([0; LD_SIZE], |i| i.id_key_digest);
        report.author_key_digest = identity
            .and_then(|i| i.author_key_digest)
            .unwrap_or([0; LD_SIZE]);
        report.report_id = self.report_id;
        // No migration agent: REPORT_ID_MA is all ones, as on AMD's platforms.
        report.report_id_ma = [0xFF; 32];
        report.reported_tcb = tcb;
        report.cpuid = Some(Cpuid {
            family,
            model,
            stepping,
        });
        report.chip_id = root.chip_id();
        report.committed_tcb = tcb;
        report.current_version = SIM_FIRMWARE;
        report.committed_version = SIM_FIRMWARE;
        report.launch_tcb = tcb;
        report.launch_mit_vector = Some(0);
        report.current_mit_vector = Some(0);
        let mut bytes = report.to_bytes();
        let (r, s) = root.sign_report(bytes.get(..SIGNED_SIZE).unwrap_or(&[]));
        if let Some(dst) = bytes.get_mut(SIGNED_SIZE..SIGNED_SIZE + 72) {
            dst.copy_from_slice(&r);
        }
        if let Some(dst) = bytes.get_mut(SIGNED_SIZE + 72..SIGNED_SIZE + 144) {
            dst.copy_from_slice(&s);
        }
        Ok(bytes)
    }
}
