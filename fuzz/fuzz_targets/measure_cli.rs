//! `cloister measure` without a process: its clap arguments
//! (`cloister_vmm::cli::measure::MeasureArgs`, parsed with `try_parse_from`) and `run`,
//! which predicts a launch measurement for QEMU+OVMF (sev-snp-measure's flags) or for
//! `cloister run`'s own layout.
//!
//! Input: `[token]...` (at most 24), a token being `[kind][index or string]`: a flag of
//! the command, a value from a list of meaningful ones (modes, vCPU types, VMM types,
//! layouts, platforms, sizes, hashes), a prepared file (a synthetic OVMF with a
//! kernel-hashes section, Debian's OVMF, the test guest as ELF and bzImage, an initrd,
//! the policy example and a policy allowing simulation, an empty file, a missing path), or
//! a string from the input. Seeds: the README's and sev-snp-measure's command lines.
//!
//! To stay fast, a run is skipped when it would measure more than 32 MiB of guest memory,
//! 16 vCPUs or 64 disks (parsing still happens); `--dump-vmsa` is switched off (it writes
//! files into the working directory).
//!
//! Asserted: no panic; an error has a message; the same arguments give the same output;
//! the bare output is the measurement in the format asked for (96 hex digits, or base64 of
//! 48 bytes), `--json` is JSON naming it, `--verbose` contains it; and for QEMU+OVMF
//! `--snp-ovmf-hash` of `--mode snp:ovmf-hash`'s output gives the measurement the firmware
//! pages give (sev-snp-measure's contract).
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use clap::Parser;
use cloister_firmware::synthetic::SyntheticOvmf;
use cloister_fuzz::input::{Reader, Writer};
use cloister_fuzz::{fixtures, Seeds};
use cloister_vmm::cli::measure::{run, MeasureArgs, OutputFormat};
use cloister_vmm::memory::MemorySize;
use libfuzzer_sys::fuzz_target;

#[derive(Debug, Parser)]
#[command(name = "measure")]
struct Cli {
    #[command(flatten)]
    args: MeasureArgs,
}

const FLAGS: [&str; 27] = [
    "--mode",
    "--vcpus",
    "--kernel",
    "--initrd",
    "--append",
    "--vcpu-type",
    "--vcpu-sig",
    "--vcpu-family",
    "--vcpu-model",
    "--vcpu-stepping",
    "--vmm-type",
    "--ovmf",
    "--layout",
    "--guest-features",
    "--output-format",
    "--snp-ovmf-hash",
    "--dump-vmsa",
    "--verbose",
    "-v",
    "--json",
    "--platform",
    "--memory",
    "--policy",
    "--disks",
    "--boot",
    "--help",
    "--",
];

const VALUES: [&str; 40] = [
    "snp", "snp:ovmf-hash", "sev", "SEV-SNP", "1", "2", "4", "0", "4097", "EPYC-v4",
    "EPYC-Milan", "EPYC-Genoa", "EPYC", "QEMU", "ec2", "gce", "qemu-ovmf", "cloister", "hex",
    "base64", "direct", "verifier", "sim", "none", "16M", "32M", "1G", "0x21", "0x1",
    "0x800f12", "25", "17", "0b101", "0xzz", "console=ttyS0",
    "a5b54e62ae971b58274dd24cc6c47b842662617036e7bd67d7326c07ac6363f35399ef933330a5ea160cead90a00603f",
    "", "-1", "18446744073709551616", "1.5",
];

/// The files tokens can name, made once per process.
struct Files {
    dir: PathBuf,
    names: Vec<&'static str>,
}

fn files() -> &'static Files {
    static FILES: OnceLock<Files> = OnceLock::new();
    FILES.get_or_init(|| {
        let dir = cloister_fuzz::scratch_dir("measure");
        let mut made: Vec<(&'static str, Vec<u8>)> = vec![
            ("bzImage", cloister_vmm::test_guest::BZIMAGE.to_vec()),
            ("guest.elf", cloister_vmm::test_guest::ELF.to_vec()),
            ("initrd.img", b"initrd contents".to_vec()),
            ("empty", Vec::new()),
            (
                "policy-sim.toml",
                b"[launch]\nallow_simulation = true\nrequire_snp = false\n".to_vec(),
            ),
            ("policy-bad.toml", b"allow_debug = maybe\n".to_vec()),
        ];
        if let Some(ovmf) = SyntheticOvmf::amd_sev_like(64 * 4096, 7).build() {
            made.push(("ovmf-synthetic.fd", ovmf));
        }
        if let Some(ovmf) = fixtures::debian_ovmf() {
            made.push(("OVMF.fd", ovmf));
        }
        for path in fixtures::policy_examples() {
            if let Some(bytes) = fixtures::read(&path) {
                made.push(("tenant.toml", bytes));
            }
        }
        let mut names = Vec::new();
        for (name, bytes) in made {
            if std::fs::write(dir.join(name), bytes).is_ok() {
                names.push(name);
            }
        }
        names.push("missing");
        Files { dir, names }
    })
}

fn read_argv(data: &[u8]) -> Vec<String> {
    let mut r = Reader::new(data);
    let files = files();
    let mut argv = vec!["measure".to_string()];
    for _ in 0..24 {
        if r.is_empty() {
            break;
        }
        let kind = r.u8();
        let token = match kind % 4 {
            0 => FLAGS[usize::from(r.u8()) % FLAGS.len()].to_string(),
            1 => VALUES[usize::from(r.u8()) % VALUES.len()].to_string(),
            2 => {
                let name = files.names[usize::from(r.u8()) % files.names.len()];
                files.dir.join(name).display().to_string()
            }
            _ => String::from_utf8_lossy(r.blob()).into_owned(),
        };
        argv.push(token);
    }
    argv
}

/// Whether a run of `args` is cheap enough for fuzzing.
fn affordable(args: &MeasureArgs) -> bool {
    let memory_ok = args
        .cloister
        .memory
        .parse::<MemorySize>()
        .map_or(true, |m| m.bytes() <= 32 << 20);
    memory_ok && args.guest.vcpus.is_none_or(|n| n <= 16) && args.cloister.disks <= 64
}

fn is_measurement(text: &str, format: OutputFormat) -> bool {
    match format {
        OutputFormat::Hex => {
            text.len() == 96
                && text
                    .bytes()
                    .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        }
        OutputFormat::Base64 => {
            text.len() == 64
                && text
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/')
        }
    }
}

fuzz_target!(init: cloister_fuzz::init(seeds, warm_up), |data: &[u8]| {
    let argv = read_argv(data);
    let Ok(cli) = Cli::try_parse_from(&argv) else {
        return;
    };
    let mut args = cli.args;
    args.dump_vmsa = false;
    if !affordable(&args) {
        return;
    }
    let out = match run(&args) {
        Ok(out) => out,
        Err(e) => {
            assert!(!e.to_string().is_empty());
            return;
        }
    };
    assert_eq!(run(&args).ok().as_deref(), Some(out.as_str()), "the same arguments, another output");
    let ovmf_hash_mode = args.layout == "qemu-ovmf" && args.mode.as_deref() == Some("snp:ovmf-hash");
    let measurement = if ovmf_hash_mode {
        assert!(is_measurement(&out, OutputFormat::Hex), "{out}");
        return;
    } else if args.json {
        let value: serde_json::Value = serde_json::from_str(&out).expect("--json prints JSON");
        value["measurement"].as_str().expect("the JSON names the measurement").to_string()
    } else if args.verbose {
        out.rsplit(' ').next().unwrap_or_default().to_string()
    } else {
        out.clone()
    };
    assert!(is_measurement(&measurement, args.output_format), "{out}");

    // sev-snp-measure's two-step mode gives the same measurement.
    if args.layout == "qemu-ovmf" && args.snp_ovmf_hash.is_none() {
        let mode = args.mode.take();
        args.mode = Some("snp:ovmf-hash".into());
        let hash = run(&args).expect("the firmware digest of a firmware that measured");
        args.mode = mode;
        args.snp_ovmf_hash = Some(hash);
        let again = run(&args).expect("measuring with the firmware digest");
        assert_eq!(again, out, "--snp-ovmf-hash changes the measurement");
    }
});

fn warm_up() {
    let _ = files();
}

fn seeds(out: &mut Seeds) {
    let files = files();
    let file = |name: &str| files.names.iter().position(|n| *n == name);
    let lines: [(&str, &[&str]); 9] = [
        (
            "sev-snp-measure",
            &[
                "--mode",
                "snp",
                "--vcpus",
                "2",
                "--vcpu-type",
                "EPYC-v4",
                "--ovmf",
                "@OVMF.fd",
            ],
        ),
        (
            "sev-snp-measure-milan",
            &[
                "--mode",
                "snp",
                "--vcpus",
                "1",
                "--vcpu-type",
                "EPYC-Milan",
                "--guest-features",
                "0x21",
                "--ovmf",
                "@OVMF.fd",
                "--json",
            ],
        ),
        (
            "ovmf-hash",
            &["--mode", "snp:ovmf-hash", "--ovmf", "@OVMF.fd"],
        ),
        (
            "direct-boot",
            &[
                "--mode",
                "snp",
                "--vcpus",
                "4",
                "--vcpu-sig",
                "0x800f12",
                "--ovmf",
                "@ovmf-synthetic.fd",
                "--kernel",
                "@bzImage",
                "--initrd",
                "@initrd.img",
                "--append",
                "console=ttyS0",
                "--output-format",
                "base64",
            ],
        ),
        (
            "ec2",
            &[
                "--mode",
                "snp",
                "--vcpus",
                "2",
                "--vmm-type",
                "ec2",
                "--ovmf",
                "@ovmf-synthetic.fd",
                "-v",
            ],
        ),
        ("cloister", &["--layout", "cloister", "--memory", "16M"]),
        (
            "cloister-sim-policy",
            &[
                "--layout",
                "cloister",
                "--platform",
                "sim",
                "--memory",
                "32M",
                "--policy",
                "@policy-sim.toml",
                "--disks",
                "1",
                "--json",
            ],
        ),
        (
            "cloister-verifier",
            &[
                "--layout", "cloister", "--boot", "verifier", "--memory", "32M", "--kernel",
                "@bzImage", "--vcpus", "2",
            ],
        ),
        (
            "cloister-elf",
            &[
                "--layout",
                "cloister",
                "--memory",
                "16M",
                "--kernel",
                "@guest.elf",
                "--append",
                "console=ttyS0",
                "-v",
            ],
        ),
    ];
    for (name, line) in lines {
        let mut w = Writer::new();
        let mut ok = true;
        for token in line {
            if let Some(f) = token.strip_prefix('@') {
                match file(f) {
                    Some(i) => w.u8(2).u8(i as u8),
                    None => {
                        ok = false;
                        break;
                    }
                };
            } else if let Some(i) = FLAGS.iter().position(|f| f == token) {
                w.u8(0).u8(i as u8);
            } else if let Some(i) = VALUES.iter().position(|v| v == token) {
                w.u8(1).u8(i as u8);
            } else {
                w.u8(3).blob(token.as_bytes());
            }
        }
        if ok {
            out.add(name, &w.finish());
        }
    }
}
