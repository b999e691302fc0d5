//! Launch benchmark: what a confidential launch costs, side by side in one run.
//!
//! Run it with `cargo run --release -p cloister-bench --bin launch [-- --runs N
//! --cloister PATH --sim-root DIR --kernel FILE --initrd FILE --ovmf FILE]`.
//!
//! 1. Timing on this machine's /dev/kvm. The built-in test guest under
//!    `cloister run --platform none` and `--platform sim` (1 vCPU; 128 MiB, and 512 MiB to
//!    show what launching every RAM page as a ZERO page costs), in interleaved rounds (the
//!    order rotates every round), medians with min and max. Per run, from process start
//!    (just before `fork`/`exec`): the guest's boot marker on the serial console (the
//!    monitor's stdout, a pipe), the start and the end of the `CLOISTER-REPORT` line (sim
//!    only: without a CC blob the guest asks for no report), and process exit (`try_wait`
//!    polled every 200 µs). Every run must end with exit status 0 and the guest's PASS
//!    line, and on sim with `CLOISTER-ATTEST: ok`. The simulation root is created (RSA key
//!    generation) before any timed run. Beside the processes, this benchmark builds the
//!    same launch plans in process and times the plan build and the launch digest, the
//!    host-CPU part of the launch.
//! 2. What the PSP must measure: `cloister measure --json` for Cloister's layouts
//!    (`--layout cloister --platform snp`, with `--boot direct` and `--boot verifier`) and
//!    for QEMU+OVMF (`--mode snp`), the same
//!    kernel, initrd and command line: Debian's kernel and the nested harness's inner
//!    initrd from `target/nested-cache` when they are there (`tests/nested/run.sh
//!    --prepare-only` builds both), else the built-in test guest and a synthetic 16 MiB
//!    initrd. Pages by type and bytes whose contents are hashed; where Cloister's NORMAL
//!    bytes come from (built in process from the same inputs, cross-checked against the
//!    CLI's counts).
//! 3. What the emulation on this host distorts.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant, SystemTime};

use cloister_attestation::launch::digest::{PageType, PAGE_SIZE};
use cloister_attestation::launch::plan::{RegionRole, DEFAULT_GUEST_POLICY};
use cloister_bench::{cloister_binary, workspace_root};
use cloister_vmm::boot::plan::{cloister_plan, LayoutInputs, Platform};
use cloister_vmm::memory::MemorySize;
use cloister_vmm::test_guest::{ATTEST_PREFIX, BOOT_MARKER, BZIMAGE, ELF, REPORT_PREFIX};

/// The guest's verdict line when every check passed.
const PASS: &str = "CLOISTER-GUEST: PASS";
/// The test guest's command line: end the VM through port 0xf4 with status 0.
const GUEST_CMDLINE: &str = "cloister_test.exit=0";
/// The nested harness's inner kernel command line (tests/nested/run.sh, without `quiet`).
const DEBIAN_CMDLINE: &str = "console=ttyS0 panic=-1";
/// Debian's OVMF build.
const DEFAULT_OVMF: &str = "/usr/share/ovmf/OVMF.fd";
/// vCPU model for the QEMU+OVMF prediction (it only changes the VMSA's CPUID signature).
const VCPU_TYPE: &str = "EPYC-Milan";
/// Size of the synthetic initrd of the fallback.
const SYNTHETIC_INITRD_BYTES: usize = 16 << 20;
/// Guest memory sizes of the timing runs and of the measured Cloister layouts, in MiB.
const MEMORY_SIZES_MIB: [u64; 2] = [128, 512];
/// Kill a run that takes longer than this.
const RUN_TIMEOUT: Duration = Duration::from_secs(120);
/// How often the exit of a run is polled.
const EXIT_POLL: Duration = Duration::from_micros(200);
/// Repetitions of each in-process plan/digest timing.
const IN_PROCESS_REPS: usize = 3;
const MIB: f64 = 1024.0 * 1024.0;
const PAGE: u64 = PAGE_SIZE as u64;

/// Benchmark settings from the command line.
struct Options {
    runs: usize,
    cloister: Option<PathBuf>,
    sim_root: Option<PathBuf>,
    kernel: Option<PathBuf>,
    initrd: Option<PathBuf>,
    ovmf: PathBuf,
}

const USAGE: &str = "usage: launch [--runs N] [--cloister PATH] [--sim-root DIR] \
                     [--kernel FILE --initrd FILE] [--ovmf FILE]";

fn parse_options() -> Result<Options, String> {
    let mut options = Options {
        runs: 5,
        cloister: None,
        sim_root: None,
        kernel: None,
        initrd: None,
        ovmf: PathBuf::from(DEFAULT_OVMF),
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or(format!("{arg} needs a value"));
        match arg.as_str() {
            "--runs" => {
                let v = value()?;
                options.runs = v
                    .parse()
                    .ok()
                    .filter(|n| *n >= 1)
                    .ok_or(format!("--runs {v}: give a positive number"))?;
            }
            "--cloister" => options.cloister = Some(PathBuf::from(value()?)),
            "--sim-root" => options.sim_root = Some(PathBuf::from(value()?)),
            "--kernel" => options.kernel = Some(PathBuf::from(value()?)),
            "--initrd" => options.initrd = Some(PathBuf::from(value()?)),
            "--ovmf" => options.ovmf = PathBuf::from(value()?),
            "-h" | "--help" => return Err(USAGE.into()),
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    if options.kernel.is_some() != options.initrd.is_some() {
        return Err(format!("give --kernel and --initrd together\n{USAGE}"));
    }
    Ok(options)
}

/// Cargo's target directory, as the nested harness finds it.
fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if Path::new(&dir).is_absolute() => PathBuf::from(dir),
        Some(dir) => workspace_root().join(dir),
        None => workspace_root().join("target"),
    }
}

// ---------------------------------------------------------------------------------------
// Part 1: timing
// ---------------------------------------------------------------------------------------

/// One `cloister run` configuration.
struct Scenario {
    platform: &'static str,
    memory_mib: u64,
}

impl Scenario {
    fn label(&self) -> String {
        format!("{} {}M", self.platform, self.memory_mib)
    }

    /// Whether the guest gets a CC blob and so asks for a report.
    fn attests(&self) -> bool {
        self.platform == "sim"
    }

    fn args(&self, sim_root: &Path) -> Vec<String> {
        let mut args: Vec<String> = [
            "run",
            "--debug-exit",
            "--platform",
            self.platform,
            "--cpus",
            "1",
            "--cmdline",
            GUEST_CMDLINE,
            "--serial",
            "stdio",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(["--memory".to_string(), format!("{}M", self.memory_mib)]);
        if self.attests() {
            args.extend(["--sim-root".to_string(), sim_root.display().to_string()]);
        }
        args
    }
}

/// What one run measured, from process start.
struct Sample {
    marker: Duration,
    report_start: Option<Duration>,
    report_end: Option<Duration>,
    exit: Duration,
}

/// When each awaited piece of the console output first arrived.
#[derive(Default)]
struct ConsoleTimes {
    marker: Option<Instant>,
    report_start: Option<Instant>,
    report_end: Option<Instant>,
}

/// Position of `needle` in `haystack`, looking only where bytes from `new_from` on can
/// complete it.
fn find_new(haystack: &[u8], needle: &[u8], new_from: usize) -> Option<usize> {
    let start = new_from.saturating_sub(needle.len().saturating_sub(1));
    haystack
        .get(start..)?
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|p| start + p)
}

/// Reads the console to its end, noting when the marker and the report line arrive.
fn watch_console(mut console: impl Read) -> (Vec<u8>, ConsoleTimes) {
    let mut out = Vec::new();
    let mut times = ConsoleTimes::default();
    let mut report_at = None;
    let mut buf = [0u8; 4096];
    loop {
        let n = match console.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let now = Instant::now();
        let from = out.len();
        out.extend_from_slice(&buf[..n]);
        if times.marker.is_none() && find_new(&out, BOOT_MARKER.as_bytes(), from).is_some() {
            times.marker = Some(now);
        }
        if report_at.is_none() {
            report_at = find_new(&out, REPORT_PREFIX.as_bytes(), from);
            if report_at.is_some() {
                times.report_start = Some(now);
            }
        }
        if let (Some(at), None) = (report_at, times.report_end) {
            if out[at.max(from)..].contains(&b'\n') {
                times.report_end = Some(now);
            }
        }
    }
    (out, times)
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

/// Runs `cloister` once with `args`; checks that the guest passed (and attested when
/// `attests`).
fn run_once(cloister: &Path, args: &[String], attests: bool) -> Result<Sample, String> {
    let start = Instant::now();
    let mut child = Command::new(cloister)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", cloister.display()))?;
    let stdout = child.stdout.take().ok_or("no stdout pipe")?;
    let mut stderr = child.stderr.take().ok_or("no stderr pipe")?;
    let console = std::thread::spawn(move || watch_console(stdout));
    let err_reader = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = stderr.read_to_end(&mut s);
        s
    });
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) => {}
            Err(e) => return Err(format!("waiting for cloister: {e}")),
        }
        if start.elapsed() > RUN_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!(
                "cloister {} did not finish within {RUN_TIMEOUT:?}",
                args.join(" ")
            ));
        }
        std::thread::sleep(EXIT_POLL);
    };
    let exit = start.elapsed();
    let (out, times) = console.join().map_err(|_| "console reader panicked")?;
    let err = err_reader.join().map_err(|_| "stderr reader panicked")?;
    let describe = || {
        format!(
            "cloister {}\n--- stdout:\n{}\n--- stderr:\n{}",
            args.join(" "),
            String::from_utf8_lossy(&out),
            String::from_utf8_lossy(&err)
        )
    };
    let attested = contains(&out, &format!("{ATTEST_PREFIX}ok"));
    if status.code() != Some(0) || !contains(&out, PASS) || attested != attests {
        return Err(format!(
            "the run did not pass ({status}; attestation expected: {attests}, seen: {attested})\n{}",
            describe()
        ));
    }
    let since = |t: Instant| t.duration_since(start);
    let marker = times
        .marker
        .ok_or_else(|| format!("no boot marker\n{}", describe()))?;
    if attests && times.report_end.is_none() {
        return Err(format!("no complete report line\n{}", describe()));
    }
    Ok(Sample {
        marker: since(marker),
        report_start: times.report_start.map(since),
        report_end: times.report_end.map(since),
        exit,
    })
}

/// Median, min and max of one metric.
#[derive(Clone, Copy)]
struct Stat {
    median: f64,
    min: f64,
    max: f64,
}

fn stat(mut v: Vec<f64>) -> Option<Stat> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    let median = if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    };
    Some(Stat {
        median,
        min: v[0],
        max: v[n - 1],
    })
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// A metric of a run, in ms; None where the run has no such point.
type Metric = fn(&Sample) -> Option<f64>;

const METRICS: [(&str, Metric); 6] = [
    ("start -> boot marker", |s| Some(ms(s.marker))),
    ("start -> CLOISTER-REPORT line begins", |s| {
        s.report_start.map(ms)
    }),
    ("start -> report line complete", |s| s.report_end.map(ms)),
    ("start -> exit", |s| Some(ms(s.exit))),
    ("  boot marker -> report line begins", |s| {
        s.report_start.map(|r| ms(r) - ms(s.marker))
    }),
    ("  report line complete -> exit", |s| {
        s.report_end.map(|r| ms(s.exit) - ms(r))
    }),
];

fn cell(s: Option<Stat>) -> String {
    match s {
        Some(s) => format!("{:.1} [{:.1}-{:.1}]", s.median, s.min, s.max),
        None => "-".to_string(),
    }
}

fn ratio(num: Option<Stat>, den: Option<Stat>) -> String {
    match (num, den) {
        (Some(n), Some(d)) if d.median > 0.0 => format!("{:.2}", n.median / d.median),
        _ => "-".to_string(),
    }
}

/// The launch plan the monitor builds for the built-in guest, timed in process: (plan
/// build, launch digest) medians in ms, and the plan's page count.
fn in_process_launch(platform: Platform, memory_mib: u64) -> Result<(f64, f64, u64), String> {
    let mut build = Vec::new();
    let mut digest = Vec::new();
    let mut pages = 0;
    for _ in 0..IN_PROCESS_REPS {
        let t = Instant::now();
        let planned = cloister_plan(&LayoutInputs {
            kernel: ELF,
            kernel_name: "built-in test guest",
            initrd: None,
            cmdline: GUEST_CMDLINE,
            vcpus: 1,
            memory: MemorySize(memory_mib << 20),
            devices: &[],
            pci: false,
            platform,
            policy: DEFAULT_GUEST_POLICY,
            host_data: [0; 32],
        })
        .map_err(|e| format!("in-process plan: {e}"))?;
        build.push(ms(t.elapsed()));
        let t = Instant::now();
        std::hint::black_box(planned.plan.measure());
        digest.push(ms(t.elapsed()));
        pages = planned.plan.summary().pages;
    }
    let median = |v: Vec<f64>| stat(v).map_or(f64::NAN, |s| s.median);
    Ok((median(build), median(digest), pages))
}

fn timing(options: &Options, cloister: &Path) -> Result<(), String> {
    let sim_root = match &options.sim_root {
        Some(dir) => dir.clone(),
        None => target_dir().join("launch-bench").join("sim-root"),
    };
    let scenarios: Vec<Scenario> = MEMORY_SIZES_MIB
        .iter()
        .flat_map(|&memory_mib| {
            ["none", "sim"].map(|platform| Scenario {
                platform,
                memory_mib,
            })
        })
        .collect();

    println!("== 1. Timing: built-in test guest, 1 vCPU, `cloister run --platform none|sim` ==");
    println!("cloister: {}", cloister.display());
    println!("sim root: {}", sim_root.display());
    let fresh_root = !sim_root.join("certs").exists();
    // Warm-up, not counted: page cache, binaries, and the simulation root on first use.
    for s in &scenarios {
        let t = Instant::now();
        run_once(cloister, &s.args(&sim_root), s.attests())
            .map_err(|e| format!("warm-up {}: {e}", s.label()))?;
        if fresh_root && s.attests() && t.elapsed() > Duration::from_secs(1) {
            println!(
                "(the simulation root was created in the warm-up: {:.1} s, not counted)",
                t.elapsed().as_secs_f64()
            );
        }
    }
    println!(
        "{} timed runs per configuration, interleaved rounds (order rotates each round)",
        options.runs
    );
    let mut samples: Vec<Vec<Sample>> = scenarios.iter().map(|_| Vec::new()).collect();
    for round in 0..options.runs {
        for k in 0..scenarios.len() {
            let i = (k + round) % scenarios.len();
            let s = &scenarios[i];
            samples[i].push(run_once(cloister, &s.args(&sim_root), s.attests())?);
        }
    }

    let stats: Vec<Vec<Option<Stat>>> = samples
        .iter()
        .map(|runs| {
            METRICS
                .iter()
                .map(|(_, f)| stat(runs.iter().filter_map(f).collect()))
                .collect()
        })
        .collect();
    println!();
    print!("{:<38}", "ms, median [min-max]");
    for pair in scenarios.chunks(2) {
        for s in pair {
            print!(" {:<24}", s.label());
        }
        print!(" {:>8}", "sim/none");
    }
    println!();
    for (m, (label, _)) in METRICS.iter().enumerate() {
        print!("{label:<38}");
        for pair in stats.chunks(2) {
            let (none, sim) = (pair[0][m], pair[1][m]);
            print!(
                " {:<24} {:<24} {:>8}",
                cell(none),
                cell(sim),
                ratio(sim, none)
            );
        }
        println!();
    }
    let exit = |i: usize| stats[i][3].map_or(f64::NAN, |s| s.median);
    let extra_ms = (exit(3) - exit(1)) - (exit(2) - exit(0));
    let extra_pages = (MEMORY_SIZES_MIB[1] - MEMORY_SIZES_MIB[0]) * (1 << 20) / PAGE;
    println!(
        "sim's extra cost of {} MiB more RAM (ZERO pages), beyond none's: {:.1} ms for {} pages = {:.1} µs per page (host CPU here)",
        MEMORY_SIZES_MIB[1] - MEMORY_SIZES_MIB[0],
        extra_ms,
        extra_pages,
        extra_ms * 1000.0 / extra_pages as f64
    );

    println!();
    println!(
        "In process (the same library code `cloister run` calls; median of {IN_PROCESS_REPS}):"
    );
    println!(
        "{:<12} {:>8} {:>16} {:>26}",
        "plan", "pages", "plan build ms", "launch digest (SHA-384) ms"
    );
    for &memory_mib in &MEMORY_SIZES_MIB {
        for (name, platform) in [("none", Platform::None), ("sim", Platform::Sim)] {
            let (build, digest, pages) = in_process_launch(platform, memory_mib)?;
            println!(
                "{:<12} {pages:>8} {build:>16.1} {digest:>26.1}",
                format!("{name} {memory_mib}M")
            );
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Part 2: what the PSP must measure
// ---------------------------------------------------------------------------------------

/// The kernel, initrd and command line both layouts are measured with.
struct MeasureInputs {
    kernel: PathBuf,
    initrd: PathBuf,
    append: String,
    /// What they are, for the output.
    what: Vec<String>,
    /// Files this benchmark wrote; removed when dropped.
    _temps: Vec<tempfile::NamedTempFile>,
}

fn temp_file(name: &str, bytes: &[u8]) -> Result<tempfile::NamedTempFile, String> {
    let file = tempfile::Builder::new()
        .prefix(name)
        .tempfile()
        .map_err(|e| format!("temporary file: {e}"))?;
    std::fs::write(file.path(), bytes).map_err(|e| format!("writing {name}: {e}"))?;
    Ok(file)
}

/// Deterministic pseudo-random bytes (xorshift64), as incompressible as a real initrd.
fn noise(len: usize) -> Vec<u8> {
    let mut s: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut v = vec![0u8; len];
    for chunk in v.chunks_mut(8) {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        chunk.copy_from_slice(&s.to_le_bytes()[..chunk.len()]);
    }
    v
}

/// Entries of `dir` whose names start with `prefix`.
fn entries(dir: &Path, prefix: &str) -> Vec<PathBuf> {
    let Ok(read) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    read.filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with(prefix))
        .map(|e| e.path())
        .collect()
}

fn modified(path: &Path) -> SystemTime {
    std::fs::metadata(path)
        .and_then(|m| m.modified())
        .unwrap_or(SystemTime::UNIX_EPOCH)
}

/// Debian's kernel and the inner initrd from the nested harness's cache, when there.
/// The initrd lives in a per-run work directory the harness removes when it exits, so it
/// is copied at once.
fn nested_inputs(cache: &Path) -> (Option<PathBuf>, Option<(tempfile::NamedTempFile, PathBuf)>) {
    let kernel = entries(&cache.join("linux"), "linux-image-")
        .iter()
        .flat_map(|k| entries(&k.join("boot"), "vmlinuz-"))
        .max();
    let initrd = entries(cache, "work.")
        .into_iter()
        .map(|w| w.join("inner-initrd.cpio.gz"))
        .filter(|p| p.is_file())
        .max_by_key(|p| modified(p))
        .and_then(|p| {
            let bytes = std::fs::read(&p).ok()?;
            Some((temp_file("inner-initrd", &bytes).ok()?, p))
        });
    (kernel, initrd)
}

fn measure_inputs(options: &Options) -> Result<MeasureInputs, String> {
    if let (Some(kernel), Some(initrd)) = (&options.kernel, &options.initrd) {
        return Ok(MeasureInputs {
            kernel: kernel.clone(),
            initrd: initrd.clone(),
            append: DEBIAN_CMDLINE.to_string(),
            what: vec![format!(
                "kernel {} and initrd {} (given)",
                kernel.display(),
                initrd.display()
            )],
            _temps: Vec::new(),
        });
    }
    let cache = match std::env::var_os("NESTED_CACHE") {
        Some(dir) => PathBuf::from(dir),
        None => target_dir().join("nested-cache"),
    };
    let (kernel, initrd) = nested_inputs(&cache);
    let mut what = Vec::new();
    let mut temps = Vec::new();
    let (kernel, append) = match kernel {
        Some(k) => {
            what.push(format!("Debian's kernel: {}", k.display()));
            (k, DEBIAN_CMDLINE.to_string())
        }
        None => {
            what.push(format!(
                "no Debian kernel in {} (tests/nested/run.sh --prepare-only fetches it): \
                 falling back to the built-in test guest ({} bytes bzImage)",
                cache.join("linux").display(),
                BZIMAGE.len()
            ));
            let file = temp_file("test-guest", BZIMAGE)?;
            let path = file.path().to_path_buf();
            temps.push(file);
            (path, GUEST_CMDLINE.to_string())
        }
    };
    let initrd = match initrd {
        Some((file, source)) => {
            what.push(format!(
                "the nested harness's inner initrd: {} (copied)",
                source.display()
            ));
            let path = file.path().to_path_buf();
            temps.push(file);
            path
        }
        None => {
            what.push(format!(
                "no inner initrd in {}/work.*/ (the harness removes its work directory when it \
                 exits; tests/nested/run.sh --prepare-only keeps one): falling back to a \
                 synthetic {} MiB initrd of pseudo-random bytes",
                cache.display(),
                SYNTHETIC_INITRD_BYTES >> 20
            ));
            let file = temp_file("synthetic-initrd", &noise(SYNTHETIC_INITRD_BYTES))?;
            let path = file.path().to_path_buf();
            temps.push(file);
            path
        }
    };
    what.push(format!("command line: {append:?}; 1 vCPU"));
    Ok(MeasureInputs {
        kernel,
        initrd,
        append,
        what,
        _temps: temps,
    })
}

/// `cloister measure ... --json`: Ok(JSON) or Err(its error output).
fn cloister_measure(cloister: &Path, args: &[String]) -> Result<serde_json::Value, String> {
    let out = Command::new(cloister)
        .arg("measure")
        .args(args)
        .arg("--json")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot start {}: {e}", cloister.display()))?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
    }
    serde_json::from_slice(&out.stdout).map_err(|e| format!("measure printed no JSON: {e}"))
}

/// One row of the page table.
struct MeasuredLayout {
    label: String,
    json: serde_json::Value,
}

fn u64_at(json: &serde_json::Value, pointer: &str) -> u64 {
    json.pointer(pointer)
        .and_then(serde_json::Value::as_u64)
        .unwrap_or(0)
}

/// The bzImage setup header's sizes: (protected-mode bytes in the file, init_size).
fn bzimage_sizes(image: &[u8]) -> Option<(u64, u64)> {
    if image.get(0x202..0x206)? != b"HdrS" {
        return None;
    }
    let setup_sects = match *image.get(0x1f1)? {
        0 => 4,
        n => u64::from(n),
    };
    let init_size = u32::from_le_bytes(image.get(0x260..0x264)?.try_into().ok()?);
    Some((
        (image.len() as u64).saturating_sub((setup_sects + 1) * 512),
        u64::from(init_size),
    ))
}

/// NORMAL pages of Cloister's layout from one origin.
struct NormalOrigin {
    /// What they hold.
    origin: String,
    /// Their bytes.
    bytes: u64,
    /// How many of them are all zeroes.
    zero_pages: u64,
}

/// Where the NORMAL bytes of Cloister's layout come from, and the plan's page count.
fn cloister_normal_breakdown(
    inputs: &MeasureInputs,
    memory_mib: u64,
) -> Result<(Vec<NormalOrigin>, u64), String> {
    let kernel =
        std::fs::read(&inputs.kernel).map_err(|e| format!("{}: {e}", inputs.kernel.display()))?;
    let initrd =
        std::fs::read(&inputs.initrd).map_err(|e| format!("{}: {e}", inputs.initrd.display()))?;
    let planned = cloister_plan(&LayoutInputs {
        kernel: &kernel,
        kernel_name: "kernel",
        initrd: Some((&initrd, "initrd")),
        cmdline: &inputs.append,
        vcpus: 1,
        memory: MemorySize(memory_mib << 20),
        devices: &[],
        pci: false,
        platform: Platform::Snp,
        policy: DEFAULT_GUEST_POLICY,
        host_data: [0; 32],
    })
    .map_err(|e| format!("in-process plan: {e}"))?;
    let mut rows: Vec<NormalOrigin> = Vec::new();
    for r in planned.plan.regions() {
        if r.page_type() != PageType::Normal {
            continue;
        }
        let origin = match r.role() {
            RegionRole::Other(what @ ("kernel" | "initrd")) => what.to_string(),
            _ => "boot structures (GDT, zero page, page tables, ACPI, MP, CC blob, cmdline)"
                .to_string(),
        };
        let zero_pages = r.bytes().map_or(0, |b| {
            b.chunks(PAGE_SIZE)
                .filter(|p| p.iter().all(|&x| x == 0))
                .count() as u64
        });
        match rows.iter_mut().find(|row| row.origin == origin) {
            Some(row) => {
                row.bytes += r.len();
                row.zero_pages += zero_pages;
            }
            None => rows.push(NormalOrigin {
                origin,
                bytes: r.len(),
                zero_pages,
            }),
        }
    }
    Ok((rows, planned.plan.summary().pages))
}

fn measurements(options: &Options, cloister: &Path) -> Result<(), String> {
    println!();
    println!("== 2. What the PSP must measure: Cloister's layout vs QEMU+OVMF ==");
    let inputs = measure_inputs(options)?;
    for line in &inputs.what {
        println!("inputs: {line}");
    }
    let common = |extra: &[&str]| -> Vec<String> {
        extra
            .iter()
            .map(|s| s.to_string())
            .chain([
                "--vcpus".into(),
                "1".into(),
                "--kernel".into(),
                inputs.kernel.display().to_string(),
                "--initrd".into(),
                inputs.initrd.display().to_string(),
                "--append".into(),
                inputs.append.clone(),
            ])
            .collect()
    };
    let mut rows = Vec::new();
    let mut verifier_rows = Vec::new();
    for &memory_mib in &MEMORY_SIZES_MIB {
        let memory = format!("{memory_mib}M");
        let json = cloister_measure(
            cloister,
            &common(&[
                "--layout",
                "cloister",
                "--platform",
                "snp",
                "--memory",
                &memory,
            ]),
        )
        .map_err(|e| format!("cloister measure --layout cloister: {e}"))?;
        rows.push(MeasuredLayout {
            label: format!("Cloister layout, {memory_mib} MiB"),
            json,
        });
        let json = cloister_measure(
            cloister,
            &common(&[
                "--layout",
                "cloister",
                "--boot",
                "verifier",
                "--platform",
                "snp",
                "--memory",
                &memory,
            ]),
        )
        .map_err(|e| format!("cloister measure --layout cloister --boot verifier: {e}"))?;
        verifier_rows.push(MeasuredLayout {
            label: format!("Cloister verifier, {memory_mib} MiB"),
            json,
        });
    }
    let direct_rows = rows.len();
    rows.extend(verifier_rows);
    let mut ovmf_notes = Vec::new();
    if !options.ovmf.is_file() {
        ovmf_notes.push(format!(
            "{} does not exist: no QEMU+OVMF row",
            options.ovmf.display()
        ));
    } else {
        let ovmf = options.ovmf.display().to_string();
        let qemu = ["--mode", "snp", "--vcpu-type", VCPU_TYPE, "--ovmf", &ovmf];
        match cloister_measure(cloister, &common(&qemu)) {
            Ok(json) => rows.push(MeasuredLayout {
                label: "QEMU+OVMF, kernel hashes".into(),
                json,
            }),
            Err(refusal) => {
                ovmf_notes.push(format!(
                    "`cloister measure --mode snp --ovmf {ovmf} --kernel ...` refuses: {refusal}"
                ));
                ovmf_notes.push(
                    "so the QEMU+OVMF row is measured without --kernel: with this OVMF, QEMU's \
                     direct boot (-kernel/-initrd) measures the firmware only, and the kernel, \
                     initrd and command line are loaded by the firmware unmeasured (they are \
                     in no attestation report). With an OVMF built from OvmfPkg/AmdSev the \
                     launch also measures a page of SHA-256 hashes of kernel, initrd and \
                     command line, which that firmware checks before it boots them."
                        .into(),
                );
                let mut args: Vec<String> = qemu.iter().map(|s| s.to_string()).collect();
                args.extend(["--vcpus".into(), "1".into()]);
                let json = cloister_measure(cloister, &args)
                    .map_err(|e| format!("cloister measure --mode snp --ovmf {ovmf}: {e}"))?;
                rows.push(MeasuredLayout {
                    label: "QEMU+OVMF, firmware only".into(),
                    json,
                });
            }
        }
    }

    println!();
    let types = PageType::ALL.map(PageType::name);
    print!("{:<28} {:>8}", "layout (1 vCPU)", "pages");
    for t in types {
        print!(" {t:>10}");
    }
    println!(" {:>15} {:>13}", "bytes measured", "MiB measured");
    for row in &rows {
        print!("{:<28} {:>8}", row.label, u64_at(&row.json, "/pages"));
        for t in types {
            print!(" {:>10}", u64_at(&row.json, &format!("/pages_by_type/{t}")));
        }
        let bytes = u64_at(&row.json, "/bytes_measured");
        println!(" {bytes:>15} {:>13.2}", bytes as f64 / MIB);
    }
    println!(
        "(pages: every page the PSP launches (LAUNCH_UPDATE / VMSA); bytes measured: the \
         NORMAL and VMSA pages, whose contents the PSP encrypts and hashes; ZERO, SECRETS and \
         CPUID pages go into the digest by their PAGE_INFO only)"
    );
    for note in &ovmf_notes {
        println!("note: {note}");
    }
    if let (Some(cloister_row), Some(qemu_row)) = (rows.first(), rows.last()) {
        let c = u64_at(&cloister_row.json, "/bytes_measured") as f64;
        let q = u64_at(&qemu_row.json, "/bytes_measured") as f64;
        let cp = u64_at(&cloister_row.json, "/pages") as f64;
        let qp = u64_at(&qemu_row.json, "/pages") as f64;
        if q > 0.0 && qp > 0.0 && rows.len() > 2 * MEMORY_SIZES_MIB.len() {
            println!(
                "Cloister ({} MiB) / {}: {:.1}x the bytes measured, {:.1}x the pages launched",
                MEMORY_SIZES_MIB[0],
                qemu_row.label,
                c / q,
                cp / qp
            );
            if let Some(v) = rows.get(direct_rows) {
                let vb = u64_at(&v.json, "/bytes_measured") as f64;
                let vp = u64_at(&v.json, "/pages") as f64;
                println!(
                    "Cloister verifier ({} MiB) / {}: {:.3}x the bytes measured, {:.4}x the pages launched",
                    MEMORY_SIZES_MIB[0],
                    qemu_row.label,
                    vb / q,
                    vp / qp
                );
                println!(
                    "Cloister verifier / Cloister direct ({} MiB): {:.4}x the bytes measured, {:.5}x the pages launched",
                    MEMORY_SIZES_MIB[0],
                    vb / c,
                    vp / cp
                );
            }
        }
    }

    // Where Cloister's NORMAL bytes come from.
    let (breakdown, pages) = cloister_normal_breakdown(&inputs, MEMORY_SIZES_MIB[0])?;
    let cli_pages = rows.first().map_or(0, |r| u64_at(&r.json, "/pages"));
    println!();
    println!(
        "Cloister layout, {} MiB: NORMAL pages by origin (built in process: {pages} pages, the CLI said {cli_pages}{})",
        MEMORY_SIZES_MIB[0],
        if pages == cli_pages { ", equal" } else { ", DIFFERENT" }
    );
    println!(
        "{:<76} {:>10} {:>9} {:>15}",
        "origin", "MiB", "pages", "all-zero pages"
    );
    for row in &breakdown {
        println!(
            "{:<76} {:>10.2} {:>9} {:>15}",
            row.origin,
            row.bytes as f64 / MIB,
            row.bytes / PAGE,
            row.zero_pages
        );
    }
    if let Ok(image) = std::fs::read(&inputs.kernel) {
        if let Some((payload, init_size)) = bzimage_sizes(&image) {
            println!(
                "the kernel is a bzImage: {:.2} MiB of protected-mode code in the file, init_size \
                 {:.2} MiB; the layout loads 1 MiB .. 1 MiB + max(file, init_size), and its \
                 all-zero pages (the room the kernel decompresses into) go in as ZERO pages, \
                 so only the file's bytes are hashed as NORMAL pages",
                payload as f64 / MIB,
                init_size as f64 / MIB
            );
        }
    }
    println!(
        "modeled PSP launch time: unsourced. No per-page cost of SNP_LAUNCH_UPDATE with a \
         citable source was found (SEVeriFast, ASPLOS '24, measured pre-encryption throughput, \
         but its figures are not in this project's references), so none is multiplied here: \
         the page counts and bytes above are the inputs of such a model."
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Part 3: what the emulation distorts
// ---------------------------------------------------------------------------------------

fn distortions() {
    println!();
    println!("== 3. What this host distorts ==");
    for note in [
        "This /dev/kvm emulates every guest instruction (kvm_pvm, ~2,000x slower than native; a \
         port-I/O exit ~8 µs). The guest's own work is inflated by that factor: printing to the \
         16550 one byte per exit (the report line alone is about 2,400 bytes), the software \
         AES-256-GCM and SHA of the report request inside the guest. The monitor and the simulated platform \
         run natively on the host CPU.",
        "The sim's launch cost is host CPU, not a PSP: per page it hashes the PAGE_INFO with \
         SHA-384 (and, for NORMAL pages, the page itself), copies pages with contents, sets \
         bitmap bits and, for ZERO pages, scans the destination page; `cloister run` also \
         computes the plan's digest for its prediction (the in-process digest time above is \
         one such pass). On hardware every page is also encrypted and \
         goes through an RMP update, KVM allocates its guest_memfd page, and the PSP works at \
         its own per-page rate. So sim - none is not \
         the SNP launch overhead of real hardware; the page counts of part 2 are what carries \
         over.",
        "The report on sim is answered by the simulated PSP on the host (AES-GCM, an ECDSA P-384 \
         signature by the simulated VCEK), natively; a real PSP answers through the GHCB guest \
         request at its own speed. Memory is not encrypted on sim.",
        "The boot marker comes after the whole launch (plan, LAUNCH_UPDATE of every page, \
         FINISH): on sim, start -> marker includes the launch.",
        "Two shared CPUs run other work too, hence the spread; interleaved rounds spread any \
         drift over every column alike. Exit times are polled every 200 µs.",
    ] {
        println!("- {note}");
    }
}

fn main() -> ExitCode {
    match bench() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("launch benchmark: {e}");
            ExitCode::FAILURE
        }
    }
}

fn bench() -> Result<(), String> {
    let options = parse_options()?;
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .map_err(|e| format!("/dev/kvm cannot be opened read-write: {e}"))?;
    let cloister = match &options.cloister {
        Some(path) => path.clone(),
        None => cloister_binary()?,
    };
    timing(&options, &cloister)?;
    measurements(&options, &cloister)?;
    distortions();
    Ok(())
}
