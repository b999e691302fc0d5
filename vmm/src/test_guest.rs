//! The built-in test guest (`tests/guest`), compiled by `build.rs` and embedded in the
//! `cloister` binary. `cloister run` boots [`ELF`] when no `--kernel` is given.
//!
//! The guest prints lines starting with `CLOISTER-GUEST: ` on COM1 (the first is
//! [`BOOT_MARKER`] followed by the entry it came through), checks the e820 map, counts the
//! CPUs in the MP table and the MADT, asks for its attestation report when the zero page's
//! setup_data holds a CC blob (lines starting with [`ATTEST_PREFIX`] and one
//! [`REPORT_PREFIX`] line; the guest-request doorbell is I/O port 0x0E00), hashes every
//! virtio-mmio block device named on the command line, and ends the VM:
//! `cloister_test.exit=N` writes N to I/O port 0xf4, otherwise it powers off through the
//! ACPI sleep control register (port 0x3c0). A failed check prints a
//! `CLOISTER-GUEST: FAIL ...` line and exits with [`FAILURE_EXIT_CODE`]. Command-line
//! parameters and output lines: `tests/guest/README.md`.

/// The guest as an ELF64 image linked at 1 MiB: entry (the Linux 64-bit boot protocol
/// entry) at 0x100200, and a PVH note (XEN_ELFNOTE_PHYS32_ENTRY) for a 32-bit PVH entry.
pub const ELF: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/cloister-test-guest.elf"));

/// The same guest as a bzImage (boot protocol 2.15, XLF_KERNEL_64, not relocatable: its
/// protected-mode part must be loaded at 1 MiB; 64-bit entry at 0x100200).
pub const BZIMAGE: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/cloister-test-guest.bzImage"));

/// Cloister's boot verifier (`firmware/verifier-image`): its loaded bytes, to be placed at
/// [`VERIFIER_BASE`] and entered there in 32-bit protected mode with paging off.
pub const VERIFIER: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/cloister-verifier.bin"));
/// Where the verifier is linked and entered.
pub const VERIFIER_BASE: u64 = 0x1_0000;
/// Memory the verifier needs from [`VERIFIER_BASE`] (its bytes, then bss, page tables,
/// scratch and stack).
pub const VERIFIER_MEM_SIZE: &str =
    include_str!(concat!(env!("OUT_DIR"), "/cloister-verifier.memsize"));

/// The start of the first line the guest prints.
pub const BOOT_MARKER: &str = "CLOISTER-GUEST: boot";

/// The exit code the guest ends with when one of its checks failed.
pub const FAILURE_EXIT_CODE: u8 = 99;

/// The start of every attestation outcome line (`none (no CC blob)`, `ok`,
/// `refused status=0x..`, `<mode> refused status=0x..`, `<mode> ACCEPTED`, `failed: ..`;
/// see tests/guest/README.md).
pub const ATTEST_PREFIX: &str = "CLOISTER-ATTEST: ";

/// The start of the line carrying the attestation report as 2368 lower-case hex digits.
pub const REPORT_PREFIX: &str = "CLOISTER-REPORT: ";

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::{ELF, FAILURE_EXIT_CODE};
    use std::path::Path;
    use std::process::Command;

    use vm_memory::{Bytes, GuestAddress};

    use crate::boot::layout::ZERO_PAGE_START;
    use crate::builder::{build, VmExit};
    use crate::config::{VmConfig, VmRequest};
    use crate::vstate::vm::KVM_PATH;

    /// True if an instruction (mnemonic and operands, as objdump prints them in Intel
    /// syntax) is one this machine's KVM emulator cannot run: anything touching MMX, XMM,
    /// YMM or ZMM registers (SSE, AVX, AVX-512), or the AES-NI, CLMUL and SHA extensions.
    fn needs_simd_or_crypto_extension(instruction: &str) -> bool {
        let mnemonic = instruction.split_whitespace().next().unwrap_or("");
        let crypto = [
            "aes", "vaes", "pclmul", "vpclmul", "sha1", "sha256", "sha512",
        ]
        .iter()
        .any(|p| mnemonic.starts_with(p));
        let operands = instruction[mnemonic.len()..]
            .split(|c: char| !c.is_ascii_alphanumeric())
            .map(|word| word.to_ascii_lowercase());
        let simd_register = operands.into_iter().any(|word| {
            ["mm", "xmm", "ymm", "zmm"].iter().any(|prefix| {
                word.strip_prefix(prefix)
                    .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
            })
        });
        crypto || simd_register
    }

    #[test]
    fn the_classifier_knows_the_instructions() {
        for bad in [
            "movaps XMMWORD PTR [rsp],xmm0",
            "pxor   xmm1,xmm1",
            "vmovdqu ymm0,YMMWORD PTR [rdi]",
            "aesenc xmm0,xmm1",
            "pclmulqdq xmm0,xmm1,0x0",
            "sha256rnds2 xmm1,xmm2",
            "movq   mm0,rax",
        ] {
            assert!(needs_simd_or_crypto_extension(bad), "{bad}");
        }
        for good in [
            "mov    rax,QWORD PTR [rip+0x10]",
            "call   10cc61",
            "rep movs QWORD PTR es:[rdi],QWORD PTR ds:[rsi]",
            "xor    eax,eax",
            "cmovne rax,rcx",
        ] {
            assert!(!needs_simd_or_crypto_extension(good), "{good}");
        }
    }

    /// The guest is built without SSE and with the crypto crates' software backends
    /// (build.rs); this proves that nothing of the kind is left anywhere in its code, the
    /// precompiled `core` included (fat LTO recompiles it with the guest's features).
    #[test]
    fn guest_code_uses_no_simd_or_crypto_extensions() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("guest.elf");
        std::fs::write(&path, ELF).unwrap();
        let output = Command::new("objdump")
            .args(["-d", "-M", "intel", "--no-show-raw-insn"])
            .arg(&path)
            .output()
            .expect("objdump (GNU binutils) is needed to check the guest's instructions");
        assert!(output.status.success(), "objdump failed: {output:?}");
        let listing = String::from_utf8_lossy(&output.stdout);
        let mut function = "";
        let mut instructions = 0;
        let mut offending = Vec::new();
        for line in listing.lines() {
            if line.ends_with(">:") {
                function = line;
                continue;
            }
            // "  addr:\tmnemonic operands   # comment <symbol>"
            let Some((_, instruction)) = line.split_once(":\t") else {
                continue;
            };
            instructions += 1;
            let instruction = instruction.split('#').next().unwrap_or("");
            let instruction = instruction.split('<').next().unwrap_or("");
            if needs_simd_or_crypto_extension(instruction) {
                offending.push(format!("{function} {instruction}"));
            }
        }
        assert!(
            instructions > 1000,
            "objdump listed only {instructions} instructions"
        );
        assert!(
            offending.is_empty(),
            "the guest has {} instruction(s) this machine's KVM cannot run, e.g. {:?}",
            offending.len(),
            &offending[..offending.len().min(5)]
        );
    }

    /// Panic locations in the guest name `src/...` and `/cargo/...`, never this machine's
    /// checkout or cargo home: the image is the same wherever it is built.
    #[test]
    fn guest_names_no_build_machine_path() {
        let checkout = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let mut paths = vec![checkout];
        if let Some(home) = std::env::var_os("HOME") {
            paths.push(format!("{}/.cargo", home.to_string_lossy()));
        }
        if let Some(cargo_home) = std::env::var_os("CARGO_HOME") {
            paths.push(cargo_home.to_string_lossy().into_owned());
        }
        for path in paths.iter().filter(|p| p.len() > 1) {
            assert!(
                !ELF.windows(path.len()).any(|w| w == path.as_bytes()),
                "the guest image contains the build machine's path {path}"
            );
        }
    }

    /// Where the hand-made SNP-style structures go: free RAM below the EBDA.
    const SETUP_NODE: u64 = 0x3_0000;
    const CC_BLOB: u64 = 0x3_1000;
    const SECRETS: u64 = 0x3_2000;
    const CPUID: u64 = 0x3_3000;
    /// `boot_params.hdr.setup_data`.
    const SETUP_DATA_FIELD: u64 = ZERO_PAGE_START + 0x250;

    /// A setup_data node: next, type, len, payload.
    fn setup_node(next: u64, kind: u32, payload: &[u8]) -> Vec<u8> {
        let mut node = next.to_le_bytes().to_vec();
        node.extend_from_slice(&kind.to_le_bytes());
        node.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        node.extend_from_slice(payload);
        node
    }

    /// Bytes to write into guest memory before the guest runs: (address, bytes).
    type MemoryWrites = Vec<(u64, Vec<u8>)>;

    /// `struct cc_blob_sev_info` (SNP-FACTS §3.1).
    fn cc_blob(secrets: u64, cpuid: u64) -> Vec<u8> {
        let mut blob = vec![0u8; 40];
        blob[0..4].copy_from_slice(&0x4544_4d41u32.to_le_bytes());
        blob[4..6].copy_from_slice(&1u16.to_le_bytes());
        blob[8..16].copy_from_slice(&secrets.to_le_bytes());
        blob[16..20].copy_from_slice(&4096u32.to_le_bytes());
        blob[24..32].copy_from_slice(&cpuid.to_le_bytes());
        blob[32..36].copy_from_slice(&4096u32.to_le_bytes());
        blob
    }

    /// Boots the built-in guest after writing `(address, bytes)` into its memory, as an
    /// SNP-style loader would; returns the exit and the console. The plain KVM launch
    /// serves no guest requests, so a guest that gets as far as ringing the doorbell is
    /// told 0xffffffff (unavailable).
    fn boot_with(cmdline: &str, writes: &[(u64, Vec<u8>)]) -> (VmExit, String) {
        let dir = tempfile::tempdir().unwrap();
        let console = dir.path().join("console.log");
        let config = VmConfig::new(&VmRequest {
            cmdline: Some(cmdline.to_string()),
            cpus: 1,
            memory: "64M".into(),
            serial: format!("file={}", console.display()),
            // In-process VM: the seccomp filters would land on this test thread,
            // which the harness goes on using (files, threads).
            seccomp: Some("off".into()),
            debug_exit: true,
            ..Default::default()
        })
        .unwrap();
        let vmm = build(&config, Path::new(KVM_PATH))
            .unwrap_or_else(|e| panic!("this test boots a VM and needs /dev/kvm: {e}"));
        for (address, bytes) in writes {
            vmm.memory()
                .write_slice(bytes, GuestAddress(*address))
                .unwrap();
        }
        let end = vmm.run().unwrap();
        (end, std::fs::read_to_string(&console).unwrap())
    }

    fn snp_style_memory() -> MemoryWrites {
        let mut secrets = vec![0u8; 4096];
        secrets[0x20..0x40].fill(0x5a); // VMPCK0
        secrets[0x40..0x60].fill(0xa5); // VMPCK1
        vec![
            (SETUP_DATA_FIELD, SETUP_NODE.to_le_bytes().to_vec()),
            (
                SETUP_NODE,
                setup_node(0, 7, &(CC_BLOB as u32).to_le_bytes()),
            ),
            (CC_BLOB, cc_blob(SECRETS, CPUID)),
            (SECRETS, secrets),
            (CPUID, 1u32.to_le_bytes().to_vec()),
        ]
    }

    /// The guest finds a CC blob through setup_data and reads VMPCK0; on a plain launch
    /// nothing answers its simulated VMGEXIT, so it falls back to plain port I/O (its
    /// console keeps working) and reports that no PSP serves its request, as a failure.
    #[test]
    fn kvm_guest_finds_the_cc_blob_and_finds_no_vmgexit() {
        let (end, log) = boot_with("console=ttyS0", &snp_style_memory());
        assert!(
            log.contains("GHCB: a CC blob but no answer to the simulated VMGEXIT"),
            "console: {log}"
        );
        assert!(
            log.contains(
                "CLOISTER-GUEST: CC blob at 0x31000 version 1: secrets page 0x32000 \
                 (4096 bytes), CPUID page 0x33000 (4096 bytes, 1 entries)"
            ),
            "console: {log}"
        );
        assert!(
            log.contains(
                "CLOISTER-ATTEST: failed: unavailable: the VMM serves no guest requests \
                 (VMPCK0 copy wiped)"
            ),
            "console: {log}"
        );
        assert!(
            matches!(end, VmExit::Guest(FAILURE_EXIT_CODE)),
            "{end:?}: {log}"
        );
    }

    /// `cloister_test.attest=off` skips the request; a guest without a CC blob says so
    /// and passes.
    #[test]
    fn kvm_guest_attestation_off_and_none() {
        let (end, log) = boot_with("cloister_test.attest=off", &snp_style_memory());
        assert!(
            log.contains("CLOISTER-ATTEST: off (cloister_test.attest=off)"),
            "{log}"
        );
        assert!(matches!(end, VmExit::Guest(0)), "{end:?}: {log}");
        let (end, log) = boot_with("console=ttyS0", &[]);
        assert!(log.contains("CLOISTER-ATTEST: none (no CC blob)"), "{log}");
        assert!(log.contains("CLOISTER-GUEST: PASS"), "{log}");
        assert!(matches!(end, VmExit::Guest(0)), "{end:?}: {log}");
    }

    /// Junk in setup_data or in the blob is reported, never a hang or a fault.
    #[test]
    fn kvm_guest_survives_junk_cc_blobs() {
        let cases: [(&str, MemoryWrites); 3] = [
            (
                "setup_data list longer than the guest walks",
                vec![
                    (SETUP_DATA_FIELD, SETUP_NODE.to_le_bytes().to_vec()),
                    (SETUP_NODE, setup_node(SETUP_NODE, 1, &[0; 4])),
                ],
            ),
            (
                "setup_data node outside the e820 map at 0xdead0000",
                vec![(SETUP_DATA_FIELD, 0xdead_0000u64.to_le_bytes().to_vec())],
            ),
            (
                "CC blob magic is not 0x45444d41 but 0x0",
                vec![
                    (SETUP_DATA_FIELD, SETUP_NODE.to_le_bytes().to_vec()),
                    (
                        SETUP_NODE,
                        setup_node(0, 7, &(CC_BLOB as u32).to_le_bytes()),
                    ),
                ],
            ),
        ];
        for (what, writes) in cases {
            let (end, log) = boot_with("console=ttyS0", &writes);
            assert!(
                log.contains(&format!("CLOISTER-ATTEST: failed: CC blob: {what}")),
                "{what}: {log}"
            );
            assert!(
                matches!(end, VmExit::Guest(FAILURE_EXIT_CODE)),
                "{end:?}: {log}"
            );
        }
    }
}
