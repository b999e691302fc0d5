//! Builds the test guest (`tests/guest`) and leaves it in `OUT_DIR` for
//! `src/test_guest.rs` to embed:
//! - `cloister-test-guest.elf`: ELF64 linked at 1 MiB, entry = the Linux 64-bit entry,
//!   with a PVH note (so QEMU can boot it too);
//! - `cloister-test-guest.bzImage`: the same code behind a Linux boot protocol 2.15 setup
//!   header, 64-bit entry at +0x200 of the protected-mode part.
//!
//! The guest is compiled by calling `rustc` (cargo's `RUSTC`) directly for the host target
//! x86_64-unknown-linux-gnu: `no_std`, `no_main`, `panic=abort`, statically linked with the
//! project's linker script, so that no extra rustup target and no nightly is needed.
//!
//! `-C target-feature=-sse,-sse2`: this machine's /dev/kvm (kvm_pvm) emulates every guest
//! instruction and its emulator has no SSE arithmetic (`xorps` stops the VM with an
//! emulation failure), and LLVM uses SSE registers to zero and copy memory. rustc warns
//! that turning off `sse2` on this target is being phased out (issue 116344) because of the
//! float ABI; the guest has no floats, and the build fails loudly here if a future rustc
//! turns the warning into an error.

use std::env;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

/// Physical load address of the guest (the linker script's base).
const LOAD_ADDRESS: u64 = 0x10_0000;
/// Setup sectors after the boot sector in the bzImage (2 x 512 bytes of setup in all).
const SETUP_SECTS: u8 = 1;

fn main() -> ExitCode {
    match build() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: building the test guest (tests/guest) failed: {e}");
            ExitCode::FAILURE
        }
    }
}

fn build() -> Result<(), String> {
    let manifest_dir =
        env::var("CARGO_MANIFEST_DIR").map_err(|e| format!("CARGO_MANIFEST_DIR: {e}"))?;
    let out_dir = PathBuf::from(env::var("OUT_DIR").map_err(|e| format!("OUT_DIR: {e}"))?);
    let guest_dir = Path::new(&manifest_dir).join("../tests/guest");
    let source = guest_dir.join("src/main.rs");
    let script = guest_dir.join("guest.ld");
    println!("cargo:rerun-if-changed={}", guest_dir.join("src").display());
    println!("cargo:rerun-if-changed={}", script.display());
    println!("cargo:rerun-if-env-changed=RUSTC");

    let elf_path = out_dir.join("cloister-test-guest.elf");
    let rustc = env::var("RUSTC").unwrap_or_else(|_| "rustc".to_string());
    let output = Command::new(&rustc)
        .args(["--edition", "2021", "--crate-type", "bin"])
        .args(["--crate-name", "cloister_test_guest"])
        .args(["--target", "x86_64-unknown-linux-gnu"])
        .args(["-C", "panic=abort", "-C", "opt-level=s"])
        .args(["-C", "relocation-model=static", "-C", "code-model=small"])
        .args(["-C", "debuginfo=0", "-C", "strip=debuginfo"])
        .args(["-C", "target-feature=-sse,-sse2"])
        .args(["-C", "link-arg=-nostdlib", "-C", "link-arg=-static"])
        .arg("-C")
        .arg(format!("link-arg=-Wl,-T,{}", script.display()))
        .args(["-C", "link-arg=-Wl,--build-id=none"])
        // Reproducible: panic locations name tests/guest/..., not this checkout's path.
        .arg(format!(
            "--remap-path-prefix={}=tests/guest",
            guest_dir.display()
        ))
        .arg("-o")
        .arg(&elf_path)
        .arg(&source)
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("RUSTFLAGS")
        .output()
        .map_err(|e| format!("cannot run {rustc}: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "{rustc} exited with {}:\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    // Surface the guest's own warnings; the sse2 one is expected (see the top).
    let stderr = String::from_utf8_lossy(&output.stderr);
    for line in stderr.lines().filter(|l| l.starts_with("warning")) {
        if !line.contains("`sse2`")
            && !line.contains("warning emitted")
            && !line.contains("warnings emitted")
        {
            println!("cargo:warning=test guest: {line}");
        }
    }
    let elf = fs::read(&elf_path).map_err(|e| format!("reading {}: {e}", elf_path.display()))?;
    let image = flat_image(&elf)?;
    let bzimage = bzimage(&image)?;
    let bz_path = out_dir.join("cloister-test-guest.bzImage");
    fs::write(&bz_path, bzimage).map_err(|e| format!("writing {}: {e}", bz_path.display()))?;
    Ok(())
}

/// The guest's loadable segments as one flat image starting at `LOAD_ADDRESS`.
struct FlatImage {
    /// File contents of the segments, gaps zero-filled.
    bytes: Vec<u8>,
    /// Memory the guest needs from `LOAD_ADDRESS` (including .bss, page tables, stack).
    mem_size: u64,
}

fn u16_at(b: &[u8], off: usize) -> Result<u16, String> {
    b.get(off..off + 2)
        .and_then(|s| s.try_into().ok())
        .map(u16::from_le_bytes)
        .ok_or_else(|| format!("guest ELF truncated at {off:#x}"))
}

fn u32_at(b: &[u8], off: usize) -> Result<u32, String> {
    b.get(off..off + 4)
        .and_then(|s| s.try_into().ok())
        .map(u32::from_le_bytes)
        .ok_or_else(|| format!("guest ELF truncated at {off:#x}"))
}

fn u64_at(b: &[u8], off: usize) -> Result<u64, String> {
    b.get(off..off + 8)
        .and_then(|s| s.try_into().ok())
        .map(u64::from_le_bytes)
        .ok_or_else(|| format!("guest ELF truncated at {off:#x}"))
}

fn to_usize(v: u64) -> Result<usize, String> {
    usize::try_from(v).map_err(|_| format!("guest ELF value {v:#x} too large"))
}

fn flat_image(elf: &[u8]) -> Result<FlatImage, String> {
    if elf.get(..4) != Some(b"\x7fELF".as_slice()) || elf.get(4) != Some(&2) {
        return Err("guest is not an ELF64 file".into());
    }
    let entry = u64_at(elf, 0x18)?;
    if entry != LOAD_ADDRESS + 0x200 {
        return Err(format!(
            "guest entry is {entry:#x}, expected {:#x}",
            LOAD_ADDRESS + 0x200
        ));
    }
    let phoff = to_usize(u64_at(elf, 0x20)?)?;
    let phentsize = usize::from(u16_at(elf, 0x36)?);
    let phnum = usize::from(u16_at(elf, 0x38)?);
    let mut bytes = Vec::new();
    let mut mem_end = LOAD_ADDRESS;
    for i in 0..phnum {
        let ph = phoff + i * phentsize;
        if u32_at(elf, ph)? != 1 {
            continue; // not PT_LOAD
        }
        let offset = to_usize(u64_at(elf, ph + 0x08)?)?;
        let paddr = u64_at(elf, ph + 0x18)?;
        let filesz = to_usize(u64_at(elf, ph + 0x20)?)?;
        let memsz = u64_at(elf, ph + 0x28)?;
        if paddr < LOAD_ADDRESS {
            return Err(format!(
                "guest segment at {paddr:#x} is below {LOAD_ADDRESS:#x}"
            ));
        }
        let at = to_usize(paddr - LOAD_ADDRESS)?;
        let data = elf
            .get(offset..offset + filesz)
            .ok_or("guest ELF segment runs past the file")?;
        if bytes.len() < at + filesz {
            bytes.resize(at + filesz, 0);
        }
        bytes[at..at + filesz].copy_from_slice(data);
        mem_end = mem_end.max(paddr + memsz);
    }
    if bytes.is_empty() {
        return Err("guest ELF has no loadable segment".into());
    }
    Ok(FlatImage {
        bytes,
        mem_size: mem_end - LOAD_ADDRESS,
    })
}

/// Wraps the flat image in a bzImage: a boot sector and one setup sector carrying the
/// setup header (Linux Documentation/arch/x86/boot.rst), then the protected-mode code.
fn bzimage(image: &FlatImage) -> Result<Vec<u8>, String> {
    let setup_len = (usize::from(SETUP_SECTS) + 1) * 512;
    let mut out = vec![0u8; setup_len];
    let put16 =
        |out: &mut Vec<u8>, off: usize, v: u16| out[off..off + 2].copy_from_slice(&v.to_le_bytes());
    let put32 =
        |out: &mut Vec<u8>, off: usize, v: u32| out[off..off + 4].copy_from_slice(&v.to_le_bytes());
    let pm_len = u32::try_from(image.bytes.len()).map_err(|_| "guest image too large")?;
    let init_size =
        u32::try_from(image.mem_size.div_ceil(4096) * 4096).map_err(|_| "guest too large")?;
    out[0x1f1] = SETUP_SECTS;
    put32(&mut out, 0x1f4, pm_len.div_ceil(16)); // syssize
    put16(&mut out, 0x1fe, 0xaa55); // boot_flag
    out[0x200] = 0xeb; // jump: no real-mode entry, a jump to itself
    out[0x201] = 0xfe;
    out[0x202..0x206].copy_from_slice(b"HdrS");
    put16(&mut out, 0x206, 0x020f); // version 2.15
    out[0x211] = 0x01; // loadflags: LOADED_HIGH
    put32(&mut out, 0x214, LOAD_ADDRESS as u32); // code32_start
    put32(&mut out, 0x22c, 0x37ff_ffff); // initrd_addr_max
    put32(&mut out, 0x230, 0x1000); // kernel_alignment
    out[0x234] = 0; // relocatable_kernel: no, it runs at 1 MiB
    out[0x235] = 12; // min_alignment
    put16(&mut out, 0x236, 0x1); // xloadflags: XLF_KERNEL_64 (64-bit entry at +0x200)
    put32(&mut out, 0x238, 4095); // cmdline_size
    out[0x258..0x260].copy_from_slice(&LOAD_ADDRESS.to_le_bytes()); // pref_address
    put32(&mut out, 0x260, init_size);
    out.extend_from_slice(&image.bytes);
    Ok(out)
}
