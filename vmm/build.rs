//! Builds the test guest (`tests/guest`, a cargo crate of its own) and leaves it in
//! `OUT_DIR` for `src/test_guest.rs` to embed:
//! - `cloister-test-guest.elf`: ELF64 linked at 1 MiB, entry = the Linux 64-bit entry,
//!   with a PVH note (so QEMU can boot it too);
//! - `cloister-test-guest.bzImage`: the same code behind a Linux boot protocol 2.15 setup
//!   header, 64-bit entry at +0x200 of the protected-mode part.
//!
//! The guest is built by running cargo (`$CARGO`) on `tests/guest/Cargo.toml`:
//! `build --release --locked --target x86_64-unknown-linux-gnu`, with its own target
//! directory under `OUT_DIR` and its default features (`attest`). It is `no_std`,
//! `no_main`, `panic=abort` (its manifest's profile), and statically linked with its linker
//! script for the host target, so that no extra rustup target and no nightly is needed.
//! Its flags go in `CARGO_ENCODED_RUSTFLAGS` (which cargo prefers to any other rustflags
//! setting; with `--target` they do not reach build scripts):
//!
//! - `-C target-feature=-sse,-sse2`: this machine's /dev/kvm (kvm_pvm) emulates every guest
//!   instruction and its emulator has no SSE arithmetic (`xorps` stops the VM with an
//!   emulation failure), and LLVM uses SSE registers to zero and copy memory. rustc warns
//!   that turning off `sse2` on this target is being phased out (issue 116344) because of
//!   the float ABI; the guest has no floats, and the build fails loudly here if a future
//!   rustc turns the warning into an error.
//! - `--cfg aes_backend="soft"`, `--cfg polyval_backend="soft"` (GHASH),
//!   `--cfg sha2_backend="soft"`: the RustCrypto crates' switches that compile out their
//!   AES-NI, CLMUL, SHA-NI and AVX code paths, which would otherwise be chosen at run time
//!   by CPUID and carry their own `#[target_feature]` SSE code. The emulator has none of
//!   them. `vmm/src/test_guest.rs` disassembles the result to prove it.
//! - the linker script, `-nostdlib -static`, no build ID;
//! - `--remap-path-prefix` for the guest's sources, cargo's registry sources and the
//!   guest's target directory: panic locations name `src/...` (cargo hands rustc the
//!   guest's own files relative to `tests/guest`), `/cargo/...` and `/guest-target/...`,
//!   never this machine's paths, so the image is the same on every checkout (a test in
//!   `src/test_guest.rs` checks).
//!
//! The guest's dependencies are pinned by `tests/guest/Cargo.lock`; once cargo has them
//! (any earlier build, or `cargo fetch --manifest-path tests/guest/Cargo.toml`) the build
//! needs no network, and an outer `--offline`/`CARGO_NET_OFFLINE` reaches the inner cargo.

use std::env;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

/// Physical load address of the guest (the linker script's base).
const LOAD_ADDRESS: u64 = 0x10_0000;
/// Physical address of the boot verifier (its linker script's base and entry).
const VERIFIER_BASE: u64 = 0x1_0000;
/// Setup sectors after the boot sector in the bzImage (2 x 512 bytes of setup in all).
const SETUP_SECTS: u8 = 1;
/// The guest's target: the host's, used bare-metal.
const GUEST_TARGET: &str = "x86_64-unknown-linux-gnu";
/// The crate switches that select portable software crypto (see the top).
const SOFT_CRYPTO_CFGS: [&str; 3] = [
    "aes_backend=\"soft\"",
    "polyval_backend=\"soft\"",
    "sha2_backend=\"soft\"",
];

fn main() -> ExitCode {
    match build() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!(
                "error: vmm/build.rs (the test guest, the boot verifier, the monitor's hot-text \
                 link script) failed: {e}"
            );
            ExitCode::FAILURE
        }
    }
}

/// Cargo's home: where it keeps the registry sources the guest's dependencies come from.
fn cargo_home() -> Option<PathBuf> {
    env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| env::var_os("HOME").map(|home| Path::new(&home).join(".cargo")))
}

fn build() -> Result<(), String> {
    let manifest_dir =
        env::var("CARGO_MANIFEST_DIR").map_err(|e| format!("CARGO_MANIFEST_DIR: {e}"))?;
    let out_dir = PathBuf::from(env::var("OUT_DIR").map_err(|e| format!("OUT_DIR: {e}"))?);
    for var in ["CARGO_HOME", "CARGO_NET_OFFLINE"] {
        println!("cargo:rerun-if-env-changed={var}");
    }
    let root = Path::new(&manifest_dir);
    hot_text_first(root)?;

    let elf = bare_metal(
        root,
        &out_dir,
        &BareMetal {
            dir: "tests/guest",
            script: "guest.ld",
            bin: "cloister-test-guest",
            target: "guest-target",
        },
    )?;
    let elf_path = out_dir.join("cloister-test-guest.elf");
    fs::write(&elf_path, &elf).map_err(|e| format!("writing {}: {e}", elf_path.display()))?;
    let image = flat_image(&elf, LOAD_ADDRESS, LOAD_ADDRESS + 0x200)?;
    let bzimage = bzimage(&image)?;
    let bz_path = out_dir.join("cloister-test-guest.bzImage");
    fs::write(&bz_path, bzimage).map_err(|e| format!("writing {}: {e}", bz_path.display()))?;

    // The boot verifier: its loaded bytes from VERIFIER_BASE, and how much memory it
    // needs from there (bss, page tables, scratch, stack), for the VMM's layout.
    println!(
        "cargo:rerun-if-changed={}",
        root.join("../firmware/verifier/src").display()
    );
    println!(
        "cargo:rerun-if-changed={}",
        root.join("../firmware/verifier/Cargo.toml").display()
    );
    let elf = bare_metal(
        root,
        &out_dir,
        &BareMetal {
            dir: "firmware/verifier-image",
            script: "verifier.ld",
            bin: "cloister-verifier",
            target: "verifier-target",
        },
    )?;
    let image = flat_image(&elf, VERIFIER_BASE, VERIFIER_BASE)?;
    let bin_path = out_dir.join("cloister-verifier.bin");
    fs::write(&bin_path, &image.bytes)
        .map_err(|e| format!("writing {}: {e}", bin_path.display()))?;
    let size_path = out_dir.join("cloister-verifier.memsize");
    fs::write(&size_path, image.mem_size.to_string())
        .map_err(|e| format!("writing {}: {e}", size_path.display()))?;
    Ok(())
}

/// A bare-metal crate built for the host target.
struct BareMetal {
    /// Its directory, relative to the workspace root.
    dir: &'static str,
    /// Its linker script, in that directory.
    script: &'static str,
    /// The binary's name.
    bin: &'static str,
    /// Its target directory's name under OUT_DIR.
    target: &'static str,
}

/// Links the `cloister` binary with `hot-text.ld`, which places the functions a run
/// executes ahead of the rest of `.text`. The kernel maps an executable's cached pages 64
/// KiB around every fault, so resident text is 64 KiB per window that any executed function
/// touches: spread over the whole binary, a run of the test guest touched 37 of its 47
/// windows; gathered, about 14. `scripts/hot-text.sh`
/// writes the script by tracing runs; its patterns leave out symbol hashes, so it stays
/// valid across rebuilds, and a pattern that no longer matches costs nothing.
fn hot_text_first(root: &Path) -> Result<(), String> {
    let script = root.join("hot-text.ld");
    println!("cargo:rerun-if-changed={}", script.display());
    let script = script.display().to_string();
    if script.contains(',') {
        return Err(format!(
            "{script}: a comma in the path cannot be passed to -Wl"
        ));
    }
    println!("cargo:rustc-link-arg-bin=cloister=-Wl,-T,{script}");
    Ok(())
}

/// Builds `crate_` (see the top for the flags) and returns its ELF.
fn bare_metal(vmm_dir: &Path, out_dir: &Path, crate_: &BareMetal) -> Result<Vec<u8>, String> {
    let guest_dir = vmm_dir
        .join("..")
        .join(crate_.dir)
        .canonicalize()
        .map_err(|e| format!("{}: {e}", crate_.dir))?;
    let script = guest_dir.join(crate_.script);
    for input in ["src", crate_.script, "Cargo.toml", "Cargo.lock"] {
        println!("cargo:rerun-if-changed={}", guest_dir.join(input).display());
    }

    let target_dir = out_dir.join(crate_.target);
    let mut flags: Vec<String> = [
        "-Crelocation-model=static",
        "-Ccode-model=small",
        "-Ctarget-feature=-sse,-sse2",
        "-Clink-arg=-nostdlib",
        "-Clink-arg=-static",
        "-Clink-arg=-Wl,--build-id=none",
    ]
    .iter()
    .map(|f| f.to_string())
    .collect();
    flags.push(format!("-Clink-arg=-Wl,-T,{}", script.display()));
    for cfg in SOFT_CRYPTO_CFGS {
        flags.push("--cfg".into());
        flags.push(cfg.into());
    }
    flags.push(format!(
        "--remap-path-prefix={}={}",
        guest_dir.display(),
        crate_.dir
    ));
    if let Ok(firmware) = vmm_dir.join("../firmware").canonicalize() {
        flags.push(format!(
            "--remap-path-prefix={}=firmware",
            firmware.display()
        ));
    }
    flags.push(format!(
        "--remap-path-prefix={}=/guest-target",
        target_dir.display()
    ));
    if let Some(home) = cargo_home() {
        flags.push(format!("--remap-path-prefix={}=/cargo", home.display()));
    }
    if let Some(flag) = flags.iter().find(|f| f.contains('\x1f')) {
        return Err(format!("a path contains the flag separator 0x1f: {flag}"));
    }

    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    let output = Command::new(&cargo)
        .args(["build", "--release", "--locked", "--target", GUEST_TARGET])
        .arg("--manifest-path")
        .arg(guest_dir.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(&target_dir)
        .env("CARGO_ENCODED_RUSTFLAGS", flags.join("\x1f"))
        // Settings meant for the outer build must not leak into the guest's.
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_BUILD_RUSTFLAGS")
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("CARGO_BUILD_TARGET")
        .env_remove("CARGO_PROFILE_RELEASE_DEBUG")
        .env_remove("CARGO_PROFILE_RELEASE_LTO")
        .env_remove("CARGO_PROFILE_RELEASE_OPT_LEVEL")
        .env_remove("CARGO_PROFILE_RELEASE_PANIC")
        .env_remove("CARGO_ENCODED_RUSTDOCFLAGS")
        .output()
        .map_err(|e| format!("cannot run {cargo}: {e}"))?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() {
        return Err(format!(
            "{cargo} build exited with {}:\n{stderr}",
            output.status
        ));
    }
    // Surface the crate's own warnings; the sse2 one is expected (see the top).
    for line in stderr.lines().filter(|l| l.starts_with("warning")) {
        if !line.contains("`sse2`") && !line.contains("generated") {
            println!("cargo:warning={}: {line}", crate_.dir);
        }
    }

    let built = target_dir
        .join(GUEST_TARGET)
        .join("release")
        .join(crate_.bin);
    fs::read(&built).map_err(|e| format!("reading {}: {e}", built.display()))
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

fn flat_image(elf: &[u8], load_address: u64, expected_entry: u64) -> Result<FlatImage, String> {
    if elf.get(..4) != Some(b"\x7fELF".as_slice()) || elf.get(4) != Some(&2) {
        return Err("guest is not an ELF64 file".into());
    }
    let entry = u64_at(elf, 0x18)?;
    if entry != expected_entry {
        return Err(format!("entry is {entry:#x}, expected {expected_entry:#x}"));
    }
    let phoff = to_usize(u64_at(elf, 0x20)?)?;
    let phentsize = usize::from(u16_at(elf, 0x36)?);
    let phnum = usize::from(u16_at(elf, 0x38)?);
    let mut bytes = Vec::new();
    let mut mem_end = load_address;
    for i in 0..phnum {
        let ph = phoff + i * phentsize;
        if u32_at(elf, ph)? != 1 {
            continue; // not PT_LOAD
        }
        let offset = to_usize(u64_at(elf, ph + 0x08)?)?;
        let paddr = u64_at(elf, ph + 0x18)?;
        let filesz = to_usize(u64_at(elf, ph + 0x20)?)?;
        let memsz = u64_at(elf, ph + 0x28)?;
        if paddr < load_address {
            return Err(format!("segment at {paddr:#x} is below {load_address:#x}"));
        }
        let at = to_usize(paddr - load_address)?;
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
        mem_size: mem_end - load_address,
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
                                    // The jump over the header: its offset byte also says where the header ends
                                    // (0x202 + 0x6a = 0x26c, the end of a 2.15 header); there is no real-mode entry.
    out[0x200] = 0xeb;
    out[0x201] = 0x6a;
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
