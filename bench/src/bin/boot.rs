//! Boot benchmark on this machine's /dev/kvm: `cloister run` against QEMU
//! (`qemu-system-x86_64 -M microvm -accel kvm`) booting the same test guest with the same
//! memory and vCPU count, side by side in one run.
//!
//! Run it with `cargo run --release -p cloister-bench --bin boot [-- --runs N --memory MIB
//! --cloister PATH --qemu PATH]`.
//!
//! Measured per run, medians printed (with min and max):
//! - process start (just before `fork`/`exec`) to the guest's boot marker on the serial
//!   console (the monitor's stdout, a pipe);
//! - process start to process exit (`wait4` returning);
//! - peak RSS of the monitor process (`ru_maxrss` from `wait4`), and that peak minus the
//!   guest RAM that is resident: the RSS of the anonymous mapping(s) exactly the guest
//!   memory size, sampled from `/proc/<pid>/smaps` every few ms while the VM runs (a
//!   separate set of runs, since sampling costs CPU). Guest RAM residency only grows
//!   during a run, so the last sample is close to its peak; what remains is what the
//!   monitor itself costs. That remainder is split, from `/proc/<pid>/status` sampled at
//!   the same moments, into anonymous memory (RssAnon minus guest RAM: heap, stacks, data)
//!   and file-backed pages (RssFile: text and libraries, shared with the page cache).
//!
//! The guest is `cloister_vmm::test_guest::ELF`. cloister enters it through the Linux
//! 64-bit boot protocol; QEMU's microvm machine boots it through its PVH note with its
//! qboot firmware. The guest ends itself with `cloister_test.exit=0` on I/O port 0xf4
//! (QEMU gets an `isa-debug-exit` device there; it then exits with (0 << 1) | 1 = 1).

use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, ExitCode, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use cloister_bench::cloister_binary;

/// The first bytes the guest prints.
const MARKER: &[u8] = b"CLOISTER-GUEST: boot";
/// The guest's verdict line when every check passed.
const PASS: &[u8] = b"CLOISTER-GUEST: PASS";
/// Kill a run that takes longer than this.
const RUN_TIMEOUT: Duration = Duration::from_secs(60);
/// Interval of the `/proc/<pid>/smaps` sampling in memory runs.
const SAMPLE_INTERVAL: Duration = Duration::from_millis(2);

/// Benchmark settings from the command line.
struct Options {
    runs: usize,
    memory_mib: u64,
    cloister: Option<PathBuf>,
    qemu: PathBuf,
}

fn parse_options() -> Result<Options, String> {
    let mut options = Options {
        runs: 10,
        memory_mib: 64,
        cloister: None,
        qemu: PathBuf::from("qemu-system-x86_64"),
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
            "--memory" => {
                let v = value()?;
                options.memory_mib = v
                    .trim_end_matches(['M', 'm'])
                    .parse()
                    .ok()
                    .filter(|n| (16..=4096).contains(n))
                    .ok_or(format!("--memory {v}: give 16 to 4096 (MiB)"))?;
            }
            "--cloister" => options.cloister = Some(PathBuf::from(value()?)),
            "--qemu" => options.qemu = PathBuf::from(value()?),
            "-h" | "--help" => {
                return Err(
                    "usage: boot [--runs N] [--memory MIB] [--cloister PATH] [--qemu PATH]".into(),
                )
            }
            other => return Err(format!("unknown argument {other:?} (try --help)")),
        }
    }
    Ok(options)
}

/// One monitor under test.
struct Vmm {
    name: &'static str,
    program: PathBuf,
    args: Vec<String>,
    /// Exit status that means "the guest asked for exit code 0".
    success_code: i32,
}

/// What one run measured.
struct Sample {
    marker: Duration,
    exit: Duration,
    max_rss_kib: u64,
    guest_rss_kib: Option<u64>,
    /// Largest sampled `RssAnon` minus the guest RAM resident at the same moment: the
    /// monitor's own heap, stacks and data.
    anon_beyond_kib: Option<u64>,
    /// Largest sampled `RssFile`: mapped executable and library pages, shared with the
    /// page cache (and every other process running the same files).
    file_kib: Option<u64>,
}

/// Runs `vmm` once; with `sample_memory`, polls its smaps for guest RAM residency.
fn run_once(vmm: &Vmm, memory_mib: u64, sample_memory: bool) -> Result<Sample, String> {
    let start = Instant::now();
    let mut child = Command::new(&vmm.program)
        .args(&vmm.args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", vmm.program.display()))?;
    let pid = i32::try_from(child.id()).map_err(|_| "pid out of range")?;
    let mut stdout = child.stdout.take().ok_or("no stdout pipe")?;
    let mut stderr = child.stderr.take().ok_or("no stderr pipe")?;
    let (marker_tx, marker_rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        let mut sent = false;
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buf[..n]);
            if !sent && out.windows(MARKER.len()).any(|w| w == MARKER) {
                let _ = marker_tx.send(Instant::now());
                sent = true;
            }
        }
        out
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = stderr.read_to_end(&mut s);
        s
    });

    let mut guest_rss_kib = None;
    let mut anon_beyond_kib = None;
    let mut file_kib = None;
    let (status, rusage) = loop {
        let mut status = 0;
        // SAFETY: all-zero is a valid `rusage` (plain integers and timevals).
        let mut rusage: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: `pid` is our own unreaped child; `status` and `rusage` are valid for
        // writes. WNOHANG keeps the loop able to sample and to enforce the timeout.
        let r = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut rusage) };
        if r == pid {
            break (status, rusage);
        }
        if r < 0 {
            return Err(format!("wait4: {}", std::io::Error::last_os_error()));
        }
        if start.elapsed() > RUN_TIMEOUT {
            let _ = child.kill();
            return Err(format!(
                "{} did not finish within {RUN_TIMEOUT:?}",
                vmm.name
            ));
        }
        if sample_memory {
            if let Some(kib) = guest_ram_rss_kib(pid, memory_mib * 1024) {
                guest_rss_kib = Some(guest_rss_kib.unwrap_or(0).max(kib));
                if let Some((anon, file)) = anon_and_file_rss_kib(pid) {
                    let beyond = anon.saturating_sub(kib);
                    anon_beyond_kib = Some(anon_beyond_kib.unwrap_or(0).max(beyond));
                    file_kib = Some(file_kib.unwrap_or(0).max(file));
                }
            }
            std::thread::sleep(SAMPLE_INTERVAL);
        } else {
            std::thread::sleep(Duration::from_micros(200));
        }
    };
    let exit = start.elapsed();
    let out = reader.join().map_err(|_| "stdout reader panicked")?;
    let err = err_reader.join().map_err(|_| "stderr reader panicked")?;
    let describe = || {
        format!(
            "--- stdout:\n{}\n--- stderr:\n{}",
            String::from_utf8_lossy(&out),
            String::from_utf8_lossy(&err)
        )
    };
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        -1
    };
    if code != vmm.success_code || !out.windows(PASS.len()).any(|w| w == PASS) {
        return Err(format!(
            "{} exited with {code} (expected {}) or the guest did not pass\n{}",
            vmm.name,
            vmm.success_code,
            describe()
        ));
    }
    let marker = marker_rx
        .try_recv()
        .map_err(|_| format!("{}: no boot marker\n{}", vmm.name, describe()))?;
    Ok(Sample {
        marker: marker.duration_since(start),
        exit,
        max_rss_kib: u64::try_from(rusage.ru_maxrss).unwrap_or(0),
        guest_rss_kib,
        anon_beyond_kib,
        file_kib,
    })
}

/// `RssAnon` and `RssFile` from `/proc/<pid>/status`, in KiB.
fn anon_and_file_rss_kib(pid: i32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<u64> {
        let line = status.lines().find(|l| l.starts_with(name))?;
        line[name.len()..]
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()
    };
    Some((field("RssAnon:")?, field("RssFile:")?))
}

/// Sum of the `Rss:` of the mappings whose size is exactly the guest memory size.
fn guest_ram_rss_kib(pid: i32, size_kib: u64) -> Option<u64> {
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).ok()?;
    let mut in_guest_ram = false;
    let mut total = None;
    for line in smaps.lines() {
        if let Some(size) = line.strip_prefix("Size:") {
            let kib: u64 = size.trim().trim_end_matches("kB").trim().parse().ok()?;
            in_guest_ram = kib == size_kib;
        } else if let Some(rss) = line.strip_prefix("Rss:") {
            if in_guest_ram {
                let kib: u64 = rss.trim().trim_end_matches("kB").trim().parse().ok()?;
                total = Some(total.unwrap_or(0) + kib);
            }
        }
    }
    total
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Median, min and max of one metric.
struct Stat {
    median: f64,
    min: f64,
    max: f64,
}

fn stat(v: Vec<f64>) -> Stat {
    let min = v.iter().copied().fold(f64::INFINITY, f64::min);
    let max = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    Stat {
        median: median(v),
        min,
        max,
    }
}

/// Results of one monitor: timing runs and memory runs.
struct Results {
    timing: Vec<Sample>,
    memory: Vec<Sample>,
}

fn row(label: &str, unit: &str, c: &Stat, q: Option<&Stat>) {
    let cell = |s: &Stat| format!("{:>9.1} [{:.1}-{:.1}]", s.median, s.min, s.max);
    match q {
        Some(q) => println!(
            "{label:<36} {unit:<4} {:<26} {:<26} {:>8.2}",
            cell(c),
            cell(q),
            c.median / q.median
        ),
        None => println!(
            "{label:<36} {unit:<4} {:<26} {:<26} {:>8}",
            cell(c),
            "-",
            "-"
        ),
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn summarize(r: &Results) -> [Stat; 7] {
    let kib = |v: u64| v as f64 / 1024.0;
    [
        stat(r.timing.iter().map(|s| ms(s.marker)).collect()),
        stat(r.timing.iter().map(|s| ms(s.exit)).collect()),
        stat(r.memory.iter().map(|s| kib(s.max_rss_kib)).collect()),
        stat(
            r.memory
                .iter()
                .map(|s| kib(s.guest_rss_kib.unwrap_or(0)))
                .collect(),
        ),
        stat(
            r.memory
                .iter()
                .map(|s| kib(s.max_rss_kib.saturating_sub(s.guest_rss_kib.unwrap_or(0))))
                .collect(),
        ),
        stat(
            r.memory
                .iter()
                .map(|s| kib(s.anon_beyond_kib.unwrap_or(0)))
                .collect(),
        ),
        stat(
            r.memory
                .iter()
                .map(|s| kib(s.file_kib.unwrap_or(0)))
                .collect(),
        ),
    ]
}

fn main() -> ExitCode {
    match bench() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("boot benchmark: {e}");
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
    let guest = tempfile::Builder::new()
        .prefix("cloister-test-guest")
        .suffix(".elf")
        .tempfile()
        .map_err(|e| format!("temporary file: {e}"))?;
    std::fs::write(guest.path(), cloister_vmm::test_guest::ELF)
        .map_err(|e| format!("writing the guest: {e}"))?;
    let guest_path = guest.path().display().to_string();
    let memory = format!("{}M", options.memory_mib);
    let cmdline = "cloister_test.exit=0".to_string();

    let cloister_vmm = Vmm {
        name: "cloister",
        program: cloister.clone(),
        args: vec![
            "run".into(),
            "--debug-exit".into(),
            "--kernel".into(),
            guest_path.clone(),
            "--memory".into(),
            memory.clone(),
            "--cpus".into(),
            "1".into(),
            "--cmdline".into(),
            cmdline.clone(),
            "--serial".into(),
            "stdio".into(),
        ],
        success_code: 0,
    };
    let qemu_vmm = Vmm {
        name: "qemu",
        program: options.qemu.clone(),
        args: [
            "-M",
            "microvm",
            "-accel",
            "kvm",
            "-nodefaults",
            "-no-user-config",
            "-nographic",
            "-serial",
            "stdio",
            "-smp",
            "1",
            "-m",
            &memory,
            "-kernel",
            &guest_path,
            "-append",
            &cmdline,
            "-device",
            "isa-debug-exit,iobase=0xf4,iosize=0x04",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect(),
        success_code: 1,
    };

    println!(
        "boot benchmark: test guest ({} bytes ELF), {} MiB, 1 vCPU, {} timing runs + {} memory runs each, interleaved",
        cloister_vmm::test_guest::ELF.len(),
        options.memory_mib,
        options.runs,
        options.runs
    );
    println!("cloister: {}", cloister.display());
    println!(
        "qemu:     {} -M microvm (PVH entry via qboot)",
        options.qemu.display()
    );

    // Warm-up (page cache, binaries), not counted. QEMU failing here is reported, not fatal.
    run_once(&cloister_vmm, options.memory_mib, false)
        .map_err(|e| format!("cloister warm-up: {e}"))?;
    let mut qemu_error = run_once(&qemu_vmm, options.memory_mib, false).err();

    let mut c = Results {
        timing: Vec::new(),
        memory: Vec::new(),
    };
    let mut q = Results {
        timing: Vec::new(),
        memory: Vec::new(),
    };
    for memory_pass in [false, true] {
        for _ in 0..options.runs {
            let sample = run_once(&cloister_vmm, options.memory_mib, memory_pass)?;
            if memory_pass {
                c.memory.push(sample);
            } else {
                c.timing.push(sample);
            }
            if qemu_error.is_none() {
                match run_once(&qemu_vmm, options.memory_mib, memory_pass) {
                    Ok(sample) if memory_pass => q.memory.push(sample),
                    Ok(sample) => q.timing.push(sample),
                    Err(e) => qemu_error = Some(e),
                }
            }
        }
    }

    let cs = summarize(&c);
    let qs = if qemu_error.is_none() {
        Some(summarize(&q))
    } else {
        None
    };
    println!();
    println!(
        "{:<36} {:<4} {:<26} {:<26} {:>8}",
        "metric (median [min-max])", "unit", "cloister", "qemu microvm", "c/q"
    );
    let labels = [
        ("process start -> boot marker", "ms"),
        ("process start -> exit", "ms"),
        ("peak RSS (ru_maxrss)", "MiB"),
        ("guest RAM resident (sampled)", "MiB"),
        ("peak RSS beyond guest RAM", "MiB"),
        ("  of it anonymous (sampled peak)", "MiB"),
        ("  file-backed, shared (sampled peak)", "MiB"),
    ];
    for (i, (label, unit)) in labels.iter().enumerate() {
        row(label, unit, &cs[i], qs.as_ref().map(|s| &s[i]));
    }
    println!();
    println!(
        "Notes: on a host whose /dev/kvm emulates guest instructions (kvm_pvm), the guest's own \
         work (marker -> exit, the same guest code in both) is inflated, while the monitors' \
         start-up runs natively; runs share the CPUs with whatever else runs, hence the spread. \
         RSS beyond guest RAM = ru_maxrss minus the sampled RSS of the guest-memory-sized \
         mapping(s); its anonymous part (heap, stacks, data: the monitor's own) is the sampled \
         RssAnon minus guest RAM, its file-backed part (text and libraries, shared with the page \
         cache) the sampled RssFile."
    );
    if let Some(e) = qemu_error {
        println!();
        println!("QEMU could not boot the guest, so it has no numbers: {e}");
    }
    Ok(())
}
