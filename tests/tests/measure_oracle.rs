//! `cloister measure` against two independent implementations of the SEV-SNP launch digest:
//!
//! - sev-snp-measure (PyPI), installed by this test into a venv under
//!   `target/oracle-venv` (reused when already there) and driven in one Python process by
//!   `tests/oracle/ssm_driver.py`;
//! - the `sev` crate's `measurement` module, in process.
//!
//! Inputs: Debian's OVMF (`/usr/share/ovmf/OVMF.fd`, package `ovmf`, which carries SNP
//! metadata but no kernel-hashes section) and synthetic OVMF-shaped images built here with
//! kernel-hashes, SVSM CAA and other section layouts, with and without kernel, initrd and
//! command lines (empty, short, non-ASCII, longer than 4 KiB). The real `cloister` binary
//! is run for every combination, and the outputs must be identical byte for byte; inputs
//! both tools must refuse are checked to be refused by both.
//!
//! Fails loudly when python3, venv, pip or PyPI are unavailable.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use cloister_attestation::launch::{qemu_ovmf_plan, QemuOvmfParams, VmmType};
use cloister_firmware::synthetic::SyntheticOvmf;
use cloister_firmware::{GpaRange, OvmfImage, SectionKind, SevHashes, SevMetadataSection};
use cloister_tests::{cloister, workspace_root};

/// The sev-snp-measure release this test was validated against.
const SSM_VERSION: &str = "0.0.13";
const DEBIAN_OVMF: &str = "/usr/share/ovmf/OVMF.fd";

/// vCPU types sev-snp-measure 0.0.13 knows (its `vcpu_types.CPU_SIGS`).
const SSM_VCPU_TYPES: &[&str] = &[
    "EPYC",
    "EPYC-v1",
    "EPYC-v2",
    "EPYC-IBPB",
    "EPYC-v3",
    "EPYC-v4",
    "EPYC-Rome",
    "EPYC-Rome-v1",
    "EPYC-Rome-v2",
    "EPYC-Rome-v3",
    "EPYC-Milan",
    "EPYC-Milan-v1",
    "EPYC-Milan-v2",
    "EPYC-Genoa",
    "EPYC-Genoa-v1",
    "EPYC-Turin",
];

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"))
}

fn run(cmd: &mut Command, what: &str) -> std::process::Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {what}: {e}"))
}

/// Python of a venv with sev-snp-measure installed; created (or reused) under target/.
fn oracle_python() -> &'static Path {
    static PY: OnceLock<PathBuf> = OnceLock::new();
    PY.get_or_init(|| {
        let venv = target_dir().join("oracle-venv");
        let python = venv.join("bin").join("python");
        let installed = |python: &Path| {
            Command::new(python)
                .args([
                    "-c",
                    "import importlib.metadata as m; print(m.version('sev-snp-measure'))",
                ])
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).trim() == SSM_VERSION)
                .unwrap_or(false)
        };
        if installed(&python) {
            return python;
        }
        let host_python = std::env::var("PYTHON3").unwrap_or_else(|_| "python3".to_string());
        let out = run(
            Command::new(&host_python)
                .args(["-m", "venv", "--clear"])
                .arg(&venv),
            "python3 -m venv (install python3 and python3-venv)",
        );
        assert!(
            out.status.success(),
            "creating the oracle venv at {} failed (is python3-venv installed?): {}",
            venv.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        let out = run(
            Command::new(&python).args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                &format!("sev-snp-measure=={SSM_VERSION}"),
            ]),
            "pip install sev-snp-measure",
        );
        assert!(
            out.status.success(),
            "pip install sev-snp-measure=={SSM_VERSION} failed (PyPI must be reachable): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            installed(&python),
            "sev-snp-measure not importable after pip install"
        );
        python
    })
}

/// What one tool printed for one command line.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Outcome {
    code: i32,
    out: String,
    err: String,
}

/// Runs all jobs through sev-snp-measure in one Python process.
fn oracle(jobs: &[Vec<String>]) -> Vec<Outcome> {
    let driver = workspace_root().join("tests/oracle/ssm_driver.py");
    let mut child = Command::new(oracle_python())
        .arg(&driver)
        .arg("run")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the sev-snp-measure driver");
    let input = serde_json::to_vec(jobs).unwrap();
    child.stdin.take().unwrap().write_all(&input).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "driver failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("driver output is JSON");
    v.as_array()
        .unwrap()
        .iter()
        .map(|r| Outcome {
            code: i32::try_from(r["code"].as_i64().unwrap()).unwrap(),
            out: r["out"].as_str().unwrap().to_string(),
            err: r["err"].as_str().unwrap().to_string(),
        })
        .collect()
}

fn ours(job: &[String]) -> Outcome {
    let out = run(
        Command::new(cloister()).arg("measure").args(job),
        "cloister measure",
    );
    Outcome {
        code: out.status.code().unwrap_or(-1),
        out: String::from_utf8_lossy(&out.stdout).into_owned(),
        err: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Runs every job through both tools; every successful oracle output must be matched
/// exactly. Returns the outcomes for further checks.
fn compare_all(jobs: &[Vec<String>]) -> Vec<(Outcome, Outcome)> {
    let theirs = oracle(jobs);
    assert_eq!(theirs.len(), jobs.len());
    let mut mismatches = Vec::new();
    let mut pairs = Vec::new();
    for (job, t) in jobs.iter().zip(theirs) {
        let o = ours(job);
        assert!(
            !o.err.contains("panicked"),
            "cloister panicked on {job:?}: {}",
            o.err
        );
        if t.code == 0 && (o.code != 0 || o.out != t.out) {
            mismatches.push(format!(
                "{job:?}\n  sev-snp-measure: {:?}\n  cloister:        {:?} {}",
                t.out, o.out, o.err
            ));
        }
        pairs.push((t, o));
    }
    assert!(
        mismatches.is_empty(),
        "{} of {} combinations differ:\n{}",
        mismatches.len(),
        jobs.len(),
        mismatches.join("\n")
    );
    pairs
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

fn debian_ovmf() -> Vec<u8> {
    std::fs::read(DEBIAN_OVMF).unwrap_or_else(|e| {
        panic!("{DEBIAN_OVMF} is required (Debian package ovmf, scripts/install-deps.sh): {e}")
    })
}

/// Deterministic pseudo-random bytes.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut s = seed | 1;
    (0..len)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 24) as u8
        })
        .collect()
}

fn section(gpa: u32, size: u32, kind: SectionKind) -> SevMetadataSection {
    SevMetadataSection { gpa, size, kind }
}

/// Synthetic firmware layouts with a kernel-hashes section (OvmfPkg/AmdSev-like and others).
fn synthetic_images() -> Vec<(&'static str, SyntheticOvmf)> {
    use SectionKind::*;
    vec![
        ("amdsev-like-2m", SyntheticOvmf::amd_sev_like(2 << 20, 11)),
        (
            "hashes-at-page-start-4m",
            SyntheticOvmf {
                size: 4 << 20,
                seed: 12,
                sev_es_reset_eip: Some(0x0090_1234),
                sev_hashes_table: Some(GpaRange {
                    gpa: 0x70_0000,
                    size: 0x1000,
                }),
                sev_secret_block: None,
                sections: Some(vec![
                    section(0x70_0000, 0x1000, KernelHashes),
                    section(0x60_0000, 0x20000, SecMemory),
                    section(0x71_0000, 0x1000, Cpuid),
                    section(0x72_0000, 0x1000, Secrets),
                ]),
            },
        ),
        (
            "svsm-caa-1m",
            SyntheticOvmf {
                size: 1 << 20,
                seed: 13,
                sev_es_reset_eip: Some(0x80_b004),
                sev_hashes_table: Some(GpaRange {
                    gpa: 0x80_ff40,
                    size: 0xb0,
                }),
                sev_secret_block: None,
                sections: Some(vec![
                    section(0x80_0000, 0x1000, SvsmCaa),
                    section(0x80_1000, 0x8000, SecMemory),
                    section(0x80_d000, 0x1000, Secrets),
                    section(0x80_e000, 0x1000, Cpuid),
                    section(0x80_f000, 0x1000, KernelHashes),
                ]),
            },
        ),
    ]
}

struct Inputs {
    _dir: tempfile::TempDir,
    kernel: String,
    initrd: String,
    empty_initrd: String,
    images: Vec<(&'static str, String)>,
}

fn inputs() -> Inputs {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, bytes: &[u8]| {
        let p = dir.path().join(name);
        std::fs::write(&p, bytes).unwrap();
        p.to_str().unwrap().to_string()
    };
    let kernel = write("bzImage", &noise(600_000, 1));
    let initrd = write("initrd.img", &noise(1_200_000, 2));
    let empty_initrd = write("empty.img", b"");
    let images = synthetic_images()
        .into_iter()
        .map(|(name, s)| (name, write(&format!("{name}.fd"), &s.build().unwrap())))
        .collect();
    Inputs {
        kernel,
        initrd,
        empty_initrd,
        images,
        _dir: dir,
    }
}

#[test]
fn debian_ovmf_vcpu_counts_1_to_64() {
    let mut jobs = Vec::new();
    for n in 1..=64 {
        let n = n.to_string();
        jobs.push(args(&[
            "--mode",
            "snp",
            "--vcpus",
            &n,
            "--vcpu-type",
            "EPYC-v4",
            "--ovmf",
            DEBIAN_OVMF,
        ]));
    }
    for n in ["1", "7", "64"] {
        jobs.push(args(&[
            "--mode",
            "snp",
            "--vcpus",
            n,
            "--vcpu-type",
            "EPYC-Milan",
            "--ovmf",
            DEBIAN_OVMF,
            "--output-format",
            "base64",
        ]));
        jobs.push(args(&[
            "--mode",
            "snp",
            "--vcpus",
            n,
            "--vcpu-type",
            "EPYC-Genoa",
            "--ovmf",
            DEBIAN_OVMF,
            "-v",
        ]));
    }
    let pairs = compare_all(&jobs);
    assert!(
        pairs.iter().all(|(t, _)| t.code == 0),
        "oracle refused a valid job"
    );
    // Different vCPU counts must give different digests (the AP VMSAs are measured).
    let mut outs: Vec<&str> = pairs[..64].iter().map(|(_, o)| o.out.as_str()).collect();
    outs.sort();
    outs.dedup();
    assert_eq!(outs.len(), 64);
}

#[test]
fn debian_ovmf_every_vcpu_type_and_guest_features() {
    let mut jobs = Vec::new();
    for t in SSM_VCPU_TYPES {
        for n in ["1", "3"] {
            for f in ["0x1", "0x0", "0x21", "0x3f", "0xffff", "1"] {
                jobs.push(args(&[
                    "--mode",
                    "snp",
                    "--vcpus",
                    n,
                    "--vcpu-type",
                    t,
                    "--ovmf",
                    DEBIAN_OVMF,
                    "--guest-features",
                    f,
                ]));
            }
        }
    }
    // Other ways to name the vCPU, and the other hypervisors sev-snp-measure models.
    for extra in [
        &["--vcpu-sig", "0xa00f11"][..],
        &["--vcpu-sig", "8392466"],
        &[
            "--vcpu-family",
            "25",
            "--vcpu-model",
            "17",
            "--vcpu-stepping",
            "0",
        ],
        &[
            "--vcpu-family",
            "26",
            "--vcpu-model",
            "0",
            "--vcpu-stepping",
            "0",
        ],
        &["--vcpu-type", "EPYC-v4", "--vmm-type", "ec2"],
        &["--vmm-type", "ec2"],
        &["--vcpu-type", "EPYC-v4", "--vmm-type", "gce"],
        &["--vmm-type", "gce", "--guest-features", "0x21"],
    ] {
        for n in ["1", "2", "5"] {
            let mut job = args(&["--mode", "snp", "--vcpus", n, "--ovmf", DEBIAN_OVMF]);
            job.extend(args(extra));
            jobs.push(job);
        }
    }
    let pairs = compare_all(&jobs);
    assert!(
        pairs.iter().all(|(t, _)| t.code == 0),
        "oracle refused a valid job"
    );
}

#[test]
fn synthetic_images_with_kernel_initrd_and_command_lines() {
    let inp = inputs();
    let long_cmdline: String = (0..700).map(|i| format!("opt{i}=x ")).collect::<String>();
    assert!(long_cmdline.len() > 4096);
    let cmdlines: [Option<&str>; 5] = [
        None,
        Some(""),
        Some("console=ttyS0 root=/dev/vda1"),
        Some("init=/sbin/init quiet splash µ"),
        Some(&long_cmdline),
    ];
    let mut jobs = Vec::new();
    for (_, image) in &inp.images {
        for n in ["1", "4"] {
            let base = args(&[
                "--mode",
                "snp",
                "--vcpus",
                n,
                "--vcpu-type",
                "EPYC-Milan-v2",
                "--ovmf",
                image,
            ]);
            jobs.push(base.clone());
            for initrd in [None, Some(&inp.initrd), Some(&inp.empty_initrd)] {
                for cmdline in cmdlines {
                    let mut job = base.clone();
                    job.extend(args(&["--kernel", &inp.kernel]));
                    if let Some(i) = initrd {
                        job.extend(args(&["--initrd", i]));
                    }
                    if let Some(c) = cmdline {
                        job.extend(args(&["--append", c]));
                    }
                    jobs.push(job);
                }
            }
        }
        // Precomputed firmware digest, and the other hypervisor flavours with a kernel.
        jobs.push(args(&["--mode", "snp:ovmf-hash", "--ovmf", image]));
        for vmm in ["ec2", "gce"] {
            jobs.push(args(&[
                "--mode",
                "snp",
                "--vcpus",
                "3",
                "--vcpu-type",
                "EPYC-Rome",
                "--ovmf",
                image,
                "--kernel",
                &inp.kernel,
                "--vmm-type",
                vmm,
                "--guest-features",
                "0x21",
            ]));
        }
    }
    let pairs = compare_all(&jobs);
    assert!(
        pairs.iter().all(|(t, _)| t.code == 0),
        "oracle refused a valid job"
    );

    // --snp-ovmf-hash: feed the firmware-only digest back in, as a user would.
    let (_, image) = &inp.images[0];
    let hash = ours(&args(&["--mode", "snp:ovmf-hash", "--ovmf", image])).out;
    let job = args(&[
        "--mode",
        "snp",
        "--vcpus",
        "2",
        "--vcpu-type",
        "EPYC",
        "--ovmf",
        image,
        "--kernel",
        &inp.kernel,
        "--snp-ovmf-hash",
        hash.trim(),
    ]);
    let pairs = compare_all(std::slice::from_ref(&job));
    assert_eq!(pairs[0].0.code, 0);
}

#[test]
fn both_refuse_bad_inputs() {
    let inp = inputs();
    let dir = tempfile::tempdir().unwrap();
    let garbage = dir.path().join("garbage.fd");
    std::fs::write(&garbage, noise(64 * 1024, 9)).unwrap();
    let odd = dir.path().join("odd.fd");
    let mut odd_bytes = debian_ovmf();
    odd_bytes.truncate(odd_bytes.len() - 100);
    std::fs::write(&odd, &odd_bytes).unwrap();
    let front = dir.path().join("front.fd");
    std::fs::write(&front, &debian_ovmf()[..1 << 20]).unwrap();
    let tiny = dir.path().join("tiny.fd");
    std::fs::write(&tiny, b"OVMF").unwrap();
    let g = garbage.to_str().unwrap();
    let cases = [
        // Debian's OVMF has no kernel-hashes section: a kernel cannot be measured.
        args(&[
            "--mode",
            "snp",
            "--vcpus",
            "1",
            "--vcpu-type",
            "EPYC",
            "--ovmf",
            DEBIAN_OVMF,
            "--kernel",
            &inp.kernel,
        ]),
        args(&[
            "--mode",
            "snp",
            "--vcpus",
            "1",
            "--vcpu-type",
            "EPYC",
            "--ovmf",
            g,
        ]),
        args(&[
            "--mode",
            "snp",
            "--vcpus",
            "1",
            "--vcpu-type",
            "EPYC",
            "--ovmf",
            odd.to_str().unwrap(),
        ]),
        args(&[
            "--mode",
            "snp",
            "--vcpus",
            "1",
            "--vcpu-type",
            "EPYC",
            "--ovmf",
            front.to_str().unwrap(),
        ]),
        args(&[
            "--mode",
            "snp",
            "--vcpus",
            "1",
            "--vcpu-type",
            "EPYC",
            "--ovmf",
            tiny.to_str().unwrap(),
        ]),
        args(&[
            "--mode",
            "snp",
            "--vcpus",
            "1",
            "--vcpu-type",
            "EPYC",
            "--ovmf",
            "/nonexistent/OVMF.fd",
        ]),
        args(&[
            "--mode",
            "snp",
            "--vcpus",
            "1",
            "--vcpu-type",
            "EPYC-Zen9",
            "--ovmf",
            DEBIAN_OVMF,
        ]),
        args(&["--mode", "snp", "--vcpus", "1", "--ovmf", DEBIAN_OVMF]),
        args(&[
            "--mode",
            "snp",
            "--vcpu-type",
            "EPYC",
            "--ovmf",
            DEBIAN_OVMF,
        ]),
        args(&[
            "--mode",
            "snp",
            "--vcpus",
            "1",
            "--vcpu-type",
            "EPYC",
            "--ovmf",
            DEBIAN_OVMF,
            "--guest-features",
            "0xnothex",
        ]),
        args(&[
            "--mode",
            "snp",
            "--vcpus",
            "1",
            "--vcpu-type",
            "EPYC",
            "--ovmf",
            DEBIAN_OVMF,
            "--initrd",
            &inp.initrd,
        ]),
        args(&[
            "--mode",
            "snp",
            "--vcpus",
            "1",
            "--vcpu-type",
            "EPYC",
            "--ovmf",
            &inp.images[0].1,
            "--kernel",
            "/nonexistent/bzImage",
        ]),
        args(&[
            "--mode",
            "snp",
            "--vcpus",
            "1",
            "--vcpu-type",
            "EPYC",
            "--ovmf",
            DEBIAN_OVMF,
            "--snp-ovmf-hash",
            "abcd",
        ]),
        args(&[
            "--mode",
            "snp",
            "--vcpus",
            "1",
            "--vcpu-type",
            "EPYC",
            "--ovmf",
            DEBIAN_OVMF,
            "--output-format",
            "yaml",
        ]),
    ];
    let theirs = oracle(&cases);
    for (job, t) in cases.iter().zip(theirs) {
        let o = ours(job);
        assert_ne!(t.code, 0, "sev-snp-measure accepted {job:?}: {}", t.out);
        assert_ne!(o.code, 0, "cloister accepted {job:?}: {}", o.out);
        assert!(
            o.out.is_empty(),
            "cloister printed a measurement for {job:?}"
        );
        assert!(
            !o.err.contains("panicked"),
            "cloister panicked on {job:?}: {}",
            o.err
        );
        let first = o.err.lines().next().unwrap_or_default();
        assert!(
            first.starts_with("Error: ") || first.starts_with("error: "),
            "no clear error for {job:?}: {:?}",
            o.err
        );
        eprintln!("{job:?}\n  cloister: {first}");
    }
}

#[test]
fn non_snp_firmware_is_refused_where_sev_snp_measure_computes_a_digest() {
    // Documented divergence: Debian's OVMF_CODE_4M.fd has a footer table and SEV-ES reset
    // block but no SEV metadata, so it cannot boot as an SNP guest. sev-snp-measure
    // nevertheless prints a digest (firmware pages plus VMSAs); cloister refuses and says why.
    let image = "/usr/share/OVMF/OVMF_CODE_4M.fd";
    assert!(
        Path::new(image).exists(),
        "{image} is required (Debian package ovmf)"
    );
    let job = args(&[
        "--mode",
        "snp",
        "--vcpus",
        "2",
        "--vcpu-type",
        "EPYC",
        "--ovmf",
        image,
    ]);
    let t = &oracle(std::slice::from_ref(&job))[0];
    let o = ours(&job);
    assert_eq!(t.code, 0);
    assert_ne!(o.code, 0);
    assert!(o.err.contains("no SEV metadata"), "{}", o.err);
}

#[test]
fn json_summary_matches_the_plain_measurement() {
    let plain = ours(&args(&[
        "--mode",
        "snp",
        "--vcpus",
        "4",
        "--vcpu-type",
        "EPYC-Genoa",
        "--ovmf",
        DEBIAN_OVMF,
    ]));
    let json = ours(&args(&[
        "--mode",
        "snp",
        "--vcpus",
        "4",
        "--vcpu-type",
        "EPYC-Genoa",
        "--ovmf",
        DEBIAN_OVMF,
        "--json",
    ]));
    assert_eq!(plain.code, 0);
    let v: serde_json::Value = serde_json::from_str(&json.out).unwrap();
    assert_eq!(v["measurement"].as_str().unwrap(), plain.out.trim());
    assert_eq!(v["vcpus"], 4);
    assert_eq!(v["pages_by_type"]["vmsa"], 4);
    assert_eq!(v["pages_by_type"]["normal"], 512);
    assert_eq!(v["bytes_measured"], (512 + 4) * 4096);
}

/// Second oracle: the `sev` crate's measurement module, in process.
#[test]
fn sev_crate_agrees() {
    use sev::measurement::snp::{snp_calc_launch_digest, SnpMeasurementArgs};
    use sev::measurement::vcpu_types::CpuType;
    use sev::measurement::vmsa::GuestFeatures;
    use sev::parser::ByteParser;

    let inp = inputs();
    // (image, kernel inputs, vCPU types, vCPU counts, guest features). The sev crate is
    // slow in unoptimised test builds, so the matrix is wide on Debian's OVMF and narrower
    // on the synthetic images.
    const ALL_TYPES: [(CpuType, &str); 5] = [
        (CpuType::Epyc, "EPYC"),
        (CpuType::EpycRomeV2, "EPYC-Rome-v2"),
        (CpuType::EpycMilan, "EPYC-Milan"),
        (CpuType::EpycGenoa, "EPYC-Genoa"),
        (CpuType::EpycTurinV1, "EPYC-Turin-v1"),
    ];
    let mut cases: Vec<SevCrateCase> = vec![SevCrateCase {
        image: DEBIAN_OVMF.to_string(),
        kernel: None,
        types: &ALL_TYPES,
        vcpus: &[1, 2, 8],
        features: &[0x1, 0x21],
    }];
    for (_, image) in &inp.images {
        for kernel in [
            None,
            Some((inp.kernel.clone(), None, None)),
            Some((
                inp.kernel.clone(),
                Some(inp.initrd.clone()),
                Some("console=ttyS0"),
            )),
        ] {
            cases.push(SevCrateCase {
                image: image.clone(),
                kernel,
                types: &ALL_TYPES[2..4],
                vcpus: &[1, 4],
                features: &[0x21],
            });
        }
    }
    let mut checked = 0;
    for case in &cases {
        let bytes = std::fs::read(&case.image).unwrap();
        let ovmf = OvmfImage::parse(&bytes).unwrap();
        let hashes = case.kernel.as_ref().map(|(k, i, a)| {
            SevHashes::from_contents(
                &std::fs::read(k).unwrap(),
                i.as_ref().map(|i| std::fs::read(i).unwrap()).as_deref(),
                a.unwrap_or("").as_bytes(),
            )
        });
        for (cpu, name) in case.types {
            for &vcpus in case.vcpus {
                for &features in case.features {
                    let theirs = snp_calc_launch_digest(SnpMeasurementArgs {
                        vcpus,
                        vcpu_type: *cpu,
                        ovmf_file: PathBuf::from(&case.image),
                        guest_features: GuestFeatures::from_bytes_with(&features.to_le_bytes(), ())
                            .unwrap(),
                        kernel_file: case.kernel.as_ref().map(|k| PathBuf::from(&k.0)),
                        initrd_file: case
                            .kernel
                            .as_ref()
                            .and_then(|k| k.1.as_ref().map(PathBuf::from)),
                        append: case.kernel.as_ref().and_then(|k| k.2),
                        ovmf_hash_str: None,
                        vmm_type: None,
                    })
                    .unwrap();
                    let plan = qemu_ovmf_plan(
                        &ovmf,
                        &QemuOvmfParams {
                            vcpus,
                            vcpu_signature:
                                cloister_attestation::launch::cpu_types::vcpu_signature(name)
                                    .unwrap(),
                            guest_features: features,
                            kernel_hashes: hashes,
                            vmm: VmmType::Qemu,
                        },
                    )
                    .unwrap();
                    assert_eq!(
                        hex::encode(plan.measure()),
                        theirs.get_hex_ld(),
                        "{} {name} vcpus={vcpus} features={features:#x} kernel={:?}",
                        case.image,
                        case.kernel
                    );
                    checked += 1;
                }
            }
        }
    }
    assert_eq!(checked, 5 * 3 * 2 + 3 * 3 * 2 * 2);
}

/// One row of the sev-crate comparison.
struct SevCrateCase<'a> {
    image: String,
    kernel: Option<(String, Option<String>, Option<&'static str>)>,
    types: &'a [(sev::measurement::vcpu_types::CpuType, &'static str)],
    vcpus: &'static [u32],
    features: &'static [u64],
}

/// Differential test on malformed and odd firmware: random byte changes where the footer
/// table and SEV metadata live. Whenever both tools accept an image they must print the
/// same digest; cloister may refuse images sev-snp-measure accepts (it checks more:
/// overlaps, alignment, duplicate GUIDs, table bounds), but must never panic, must never
/// print a digest sev-snp-measure refuses to compute, and must always say what is wrong.
#[test]
fn mutated_firmware_differential() {
    let inp = inputs();
    let dir = tempfile::tempdir().unwrap();
    let base = synthetic_images()[2].1.build().unwrap();
    let mut state = 0x5eed_1234_abcd_0001u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut jobs = Vec::new();
    for i in 0..150 {
        let mut m = base.clone();
        for _ in 0..1 + next() % 3 {
            let at = m.len() - 1 - (next() % 400) as usize;
            m[at] = next() as u8;
        }
        let path = dir.path().join(format!("mutant{i}.fd"));
        std::fs::write(&path, &m).unwrap();
        let p = path.to_str().unwrap();
        jobs.push(args(&[
            "--mode",
            "snp",
            "--vcpus",
            "2",
            "--vcpu-type",
            "EPYC",
            "--ovmf",
            p,
        ]));
        jobs.push(args(&[
            "--mode",
            "snp",
            "--vcpus",
            "2",
            "--vcpu-type",
            "EPYC",
            "--ovmf",
            p,
            "--kernel",
            &inp.kernel,
        ]));
    }
    let theirs = oracle(&jobs);
    let (mut both_ok, mut both_refuse, mut only_ssm_ok) = (0, 0, 0);
    for (job, t) in jobs.iter().zip(theirs) {
        let o = ours(job);
        assert!(
            !o.err.contains("panicked"),
            "cloister panicked on {job:?}: {}",
            o.err
        );
        match (t.code == 0, o.code == 0) {
            (true, true) => {
                assert_eq!(o.out, t.out, "digests differ for {job:?}");
                both_ok += 1;
            }
            (false, false) => both_refuse += 1,
            (true, false) => {
                assert!(o.err.starts_with("Error: "), "unclear refusal: {}", o.err);
                eprintln!("only cloister refuses: {}", o.err.trim());
                only_ssm_ok += 1;
            }
            (false, true) => panic!(
                "cloister printed {} for {job:?}, which sev-snp-measure refuses: {}",
                o.out, t.err
            ),
        }
    }
    eprintln!(
        "mutants: {both_ok} agreed digests, {both_refuse} refused by both, \
         {only_ssm_ok} refused only by cloister"
    );
    assert!(
        both_ok > 0 && both_refuse > 0,
        "the mutations did not exercise both paths"
    );
}
