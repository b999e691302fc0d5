//! Benchmark: time to predict an SEV-SNP launch digest, side by side in one run.
//!
//! Scenarios:
//! - A: a synthetic 4 MiB OVMF with a kernel-hashes section (Debian's OVMF has none),
//!   a 10 MiB kernel and a 30 MiB initrd of random bytes, 4 vCPUs;
//! - B: Debian's OVMF.fd, no kernel, 4 vCPUs.
//!
//! Contenders (median of N runs each, N >= 10): cloister's engine in process, the
//! `cloister measure` CLI (process wall time), sev-snp-measure 0.0.13 (process wall time,
//! and in-process time reported by tests/oracle/ssm_driver.py), and the `sev` crate's
//! measurement module in process. The floor is raw hashing speed on this machine: SHA-384
//! over the measured pages plus SHA-256 over kernel and initrd.
//!
//! Run: `cargo run --release -p cloister-bench --bin measure [-- RUNS]`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cloister_attestation::launch::{cpu_types, qemu_ovmf_plan, QemuOvmfParams, VmmType};
use cloister_bench::workspace_root;
use cloister_firmware::synthetic::SyntheticOvmf;
use cloister_firmware::{OvmfImage, SevHashes};

const SSM_VERSION: &str = "0.0.13";
const DEBIAN_OVMF: &str = "/usr/share/ovmf/OVMF.fd";
const VCPUS: u32 = 4;
const VCPU_TYPE: &str = "EPYC-Milan";

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Median and best of a set of runs.
#[derive(Debug, Clone, Copy)]
struct Timing {
    median: Duration,
    min: Duration,
}

impl Timing {
    fn of(times: Vec<Duration>) -> Self {
        let min = times.iter().copied().min().unwrap_or_default();
        Timing {
            median: median(times),
            min,
        }
    }
}

fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut s = seed | 1;
    let mut v = vec![0u8; len];
    for chunk in v.chunks_mut(8) {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        chunk.copy_from_slice(&s.to_le_bytes()[..chunk.len()]);
    }
    v
}

/// The release `cloister` binary next to this benchmark (built if missing).
fn cloister_bin() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let bin = exe.parent().unwrap().join("cloister");
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args([
            "build",
            "--release",
            "-p",
            "cloister-vmm",
            "--bin",
            "cloister",
        ])
        .current_dir(workspace_root())
        .status()
        .expect("cargo build cloister");
    assert!(status.success());
    bin
}

/// The oracle venv's python (shared with tests/tests/measure_oracle.rs), created if needed.
fn venv_python() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"));
    let venv = target.join("oracle-venv");
    let python = venv.join("bin/python");
    let ok = |p: &Path| {
        Command::new(p)
            .args([
                "-c",
                "import importlib.metadata as m; print(m.version('sev-snp-measure'))",
            ])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim() == SSM_VERSION)
            .unwrap_or(false)
    };
    if !ok(&python) {
        assert!(Command::new("python3")
            .args(["-m", "venv", "--clear"])
            .arg(&venv)
            .status()
            .unwrap()
            .success());
        assert!(Command::new(&python)
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                &format!("sev-snp-measure=={SSM_VERSION}")
            ])
            .status()
            .unwrap()
            .success());
    }
    python
}

struct Scenario {
    name: &'static str,
    ovmf: String,
    kernel: Option<String>,
    initrd: Option<String>,
    append: Option<&'static str>,
}

impl Scenario {
    fn cli_args(&self) -> Vec<String> {
        let mut a: Vec<String> = [
            "--mode",
            "snp",
            "--vcpus",
            "4",
            "--vcpu-type",
            VCPU_TYPE,
            "--ovmf",
            &self.ovmf,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        for (flag, v) in [
            ("--kernel", self.kernel.as_deref()),
            ("--initrd", self.initrd.as_deref()),
            ("--append", self.append),
        ] {
            if let Some(v) = v {
                a.push(flag.into());
                a.push(v.into());
            }
        }
        a
    }

    fn hashed_bytes(&self) -> (u64, u64) {
        let len = |p: &Option<String>| {
            p.as_ref()
                .map_or(0, |p| std::fs::metadata(p).unwrap().len())
        };
        let ovmf = std::fs::metadata(&self.ovmf).unwrap().len();
        // SHA-384: firmware pages + kernel-hashes page + VMSAs; SHA-256: kernel + initrd.
        let sha384 = ovmf + 4096 * (u64::from(VCPUS) + u64::from(self.kernel.is_some()));
        (sha384, len(&self.kernel) + len(&self.initrd))
    }
}

/// cloister's whole pipeline in process: read, parse, hash kernel/initrd, plan, digest.
fn cloister_in_process(s: &Scenario) -> String {
    let bytes = std::fs::read(&s.ovmf).unwrap();
    let ovmf = OvmfImage::parse(&bytes).unwrap();
    let kernel_hashes = s.kernel.as_ref().map(|k| {
        SevHashes::from_files(
            Path::new(k),
            s.initrd.as_deref().map(Path::new),
            s.append.unwrap_or("").as_bytes(),
        )
        .unwrap()
    });
    let plan = qemu_ovmf_plan(
        &ovmf,
        &QemuOvmfParams {
            vcpus: VCPUS,
            vcpu_signature: cpu_types::vcpu_signature(VCPU_TYPE).unwrap(),
            guest_features: 1,
            kernel_hashes,
            vmm: VmmType::Qemu,
        },
    )
    .unwrap();
    hex::encode(plan.measure())
}

fn sev_crate(s: &Scenario) -> String {
    use sev::measurement::snp::{snp_calc_launch_digest, SnpMeasurementArgs};
    use sev::measurement::vcpu_types::CpuType;
    use sev::measurement::vmsa::GuestFeatures;
    snp_calc_launch_digest(SnpMeasurementArgs {
        vcpus: VCPUS,
        vcpu_type: CpuType::EpycMilan,
        ovmf_file: PathBuf::from(&s.ovmf),
        guest_features: GuestFeatures::default(),
        kernel_file: s.kernel.as_ref().map(PathBuf::from),
        initrd_file: s.initrd.as_ref().map(PathBuf::from),
        append: s.append,
        ovmf_hash_str: None,
        vmm_type: None,
    })
    .unwrap()
    .get_hex_ld()
}

/// Wraps a call so it reports its wall time.
fn timed<'c>(mut f: impl FnMut() -> String + 'c) -> Box<dyn FnMut() -> (Duration, String) + 'c> {
    Box::new(move || {
        let t = Instant::now();
        let out = f();
        (t.elapsed(), out)
    })
}

fn run_cli(bin: &Path, args: &[String]) -> String {
    let out = Command::new(bin).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// sev-snp-measure timed inside Python (import excluded), median of `runs`.
fn ssm_in_process(python: &Path, args: &[String], runs: usize) -> (Timing, String) {
    let driver = workspace_root().join("tests/oracle/ssm_driver.py");
    let mut child = Command::new(python)
        .arg(driver)
        .args(["bench", &runs.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(&serde_json::to_vec(args).unwrap())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let times = v["seconds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| Duration::from_secs_f64(t.as_f64().unwrap()))
        .collect();
    (
        Timing::of(times),
        v["out"].as_str().unwrap().trim().to_string(),
    )
}

/// Raw hashing speed in MB/s (10^6 bytes per second) over a 64 MiB buffer, best of 5
/// (the floor: the best this machine did while the benchmark ran).
fn raw_speed(buf: &[u8], algo: &'static ring::digest::Algorithm) -> f64 {
    let best = (0..5)
        .map(|_| {
            let t = Instant::now();
            std::hint::black_box(ring::digest::digest(algo, buf));
            t.elapsed()
        })
        .min()
        .unwrap();
    buf.len() as f64 / best.as_secs_f64() / 1e6
}

fn raw_speed_sha2_crate(buf: &[u8]) -> f64 {
    use sha2::Digest;
    let best = (0..5)
        .map(|_| {
            let t = Instant::now();
            std::hint::black_box(sha2::Sha384::digest(buf));
            t.elapsed()
        })
        .min()
        .unwrap();
    buf.len() as f64 / best.as_secs_f64() / 1e6
}

fn ms(d: Duration) -> String {
    format!("{:9.2} ms", d.as_secs_f64() * 1e3)
}

fn main() {
    let runs: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(11)
        .max(10);
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, bytes: &[u8]| {
        let p = dir.path().join(name);
        std::fs::write(&p, bytes).unwrap();
        p.to_str().unwrap().to_string()
    };
    let synthetic = SyntheticOvmf::amd_sev_like(4 << 20, 42).build().unwrap();
    let scenarios = [
        Scenario {
            name: "A: synthetic 4 MiB OVMF + 10 MiB kernel + 30 MiB initrd, 4 vCPUs",
            ovmf: write("ovmf.fd", &synthetic),
            kernel: Some(write("bzImage", &noise(10 << 20, 1))),
            initrd: Some(write("initrd.img", &noise(30 << 20, 2))),
            append: Some("console=ttyS0 root=/dev/vda1 ro"),
        },
        Scenario {
            name: "B: Debian OVMF.fd (2 MiB), no kernel, 4 vCPUs",
            ovmf: DEBIAN_OVMF.to_string(),
            kernel: None,
            initrd: None,
            append: None,
        },
    ];

    let bin = cloister_bin();
    let python = venv_python();
    let buf = noise(64 << 20, 3);
    let sha384 = raw_speed(&buf, &ring::digest::SHA384);
    let sha256 = raw_speed(&buf, &ring::digest::SHA256);
    let sha384_sha2 = raw_speed_sha2_crate(&buf);
    println!(
        "machine: {} cores, load average {}; rounds: {runs} (contenders interleaved per round)",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .split(' ')
            .next()
            .unwrap_or("?")
    );
    println!("raw SHA-384 (ring): {sha384:8.0} MB/s   raw SHA-384 (sha2 crate): {sha384_sha2:8.0} MB/s   raw SHA-256 (ring): {sha256:8.0} MB/s");

    for sc in &scenarios {
        let args = sc.cli_args();
        let mut cli_args = vec!["measure".to_string()];
        cli_args.extend(args.iter().cloned());
        let ssm_cmd = python.parent().unwrap().join("sev-snp-measure");
        let (bytes384, bytes256) = sc.hashed_bytes();
        let raw_floor = Duration::from_secs_f64(
            bytes384 as f64 / sha384 / 1e6 + bytes256 as f64 / sha256 / 1e6,
        );

        // The floor, per round: raw SHA-384 over exactly the pages the digest hashes and
        // raw SHA-256 over kernel and initrd, from memory.
        let ovmf_bytes = std::fs::read(&sc.ovmf).unwrap();
        let files: Vec<Vec<u8>> = [&sc.kernel, &sc.initrd]
            .into_iter()
            .flatten()
            .map(|p| std::fs::read(p).unwrap())
            .collect();
        let vmsa_pages = vec![0u8; 4096 * (VCPUS as usize + 1)];
        let floor_once = || {
            for page in ovmf_bytes.chunks(4096).chain(vmsa_pages.chunks(4096)) {
                std::hint::black_box(ring::digest::digest(&ring::digest::SHA384, page));
            }
            for f in &files {
                std::hint::black_box(ring::digest::digest(&ring::digest::SHA256, f));
            }
            String::new()
        };
        // Contenders run round-robin, one call each per round, so all see the same load.
        type Contender<'c> = (&'static str, Box<dyn FnMut() -> (Duration, String) + 'c>);
        let mut contenders: Vec<Contender> = vec![
            ("raw hashing floor (ring)", timed(floor_once)),
            (
                "cloister engine (in process)",
                timed(|| cloister_in_process(sc)),
            ),
            (
                "cloister measure (CLI process)",
                timed(|| run_cli(&bin, &cli_args)),
            ),
            ("sev crate 8 (in process)", timed(|| sev_crate(sc))),
            (
                "sev-snp-measure (in Python)",
                Box::new(|| {
                    let (t, out) = ssm_in_process(&python, &args, 1);
                    (t.median, out)
                }),
            ),
            (
                "sev-snp-measure (CLI process)",
                timed(|| run_cli(&ssm_cmd, &args)),
            ),
        ];
        let mut times: Vec<Vec<Duration>> = vec![Vec::new(); contenders.len()];
        let mut outs: Vec<String> = vec![String::new(); contenders.len()];
        for _ in 0..runs {
            for (i, (_, f)) in contenders.iter_mut().enumerate() {
                let (t, out) = f();
                times[i].push(t);
                outs[i] = out;
            }
        }
        let floor_timing = Timing::of(times[0].clone());
        let floor = floor_timing.median;
        let results: Vec<(&str, Timing, String)> = contenders
            .iter()
            .zip(times)
            .zip(outs)
            .skip(1)
            .map(|(((name, _), t), o)| (*name, Timing::of(t), o))
            .collect();
        println!();
        println!("{}", sc.name);
        println!(
            "  hashed: {:.1} MB SHA-384 + {:.1} MB SHA-256; floor measured in the same rounds: median {}, best {} (from the 64 MiB raw speeds: {})",
            bytes384 as f64 / 1e6,
            bytes256 as f64 / 1e6,
            ms(floor),
            ms(floor_timing.min),
            ms(raw_floor)
        );
        let reference = &results[0].2;
        let ours = results[0].1;
        println!(
            "  {:32} {:>12} {:>12} {:>10} {:>11} {:>16}",
            "contender", "median", "best", "MB/s(med)", "x floor", "x cloister eng."
        );
        for (name, t, out) in &results {
            assert_eq!(out, reference, "{name} disagrees with cloister");
            let mbs = (bytes384 + bytes256) as f64 / t.median.as_secs_f64() / 1e6;
            println!(
                "  {name:32} {} {} {mbs:10.0} {:10.2}x {:15.2}x",
                ms(t.median),
                ms(t.min),
                t.median.as_secs_f64() / floor.as_secs_f64(),
                t.median.as_secs_f64() / ours.median.as_secs_f64(),
            );
        }
        println!("  digest: {reference}");
    }
}
