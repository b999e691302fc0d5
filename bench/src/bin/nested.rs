//! Benchmark 7b: `cloister` vs QEMU `-accel kvm` with the `pc` machine (i440FX, SeaBIOS,
//! the disk as virtio-blk-pci) and with the `microvm` machine (virtio-mmio in ACPI),
//! booting Debian's own Linux kernel on a real (nested) KVM, side by side in one run of
//! the nested-KVM harness (`tests/nested/run.sh`).
//!
//! One outer VM (QEMU TCG with SVM and nested paging) boots once; inside it the outer
//! /init boots the same Debian kernel + busybox initramfs + 1 MiB disk, with the same
//! kernel command line (`console=ttyS0 panic=-1 quiet`), vCPUs and memory, under each VMM,
//! interleaved (qemu-pc, qemu-microvm, cloister, qemu-pc, ...), N times each. Times are
//! taken inside the outer VM (busybox `ts -s`, seconds since the inner VMM process
//! started):
//! - marker: the inner /init printed its first line (Linux booted to userspace);
//! - done:   the virtio modules are loaded and the disk was read;
//! - exit:   the VMM process exited after the guest powered off.
//!
//! The pre-kernel column (marker minus the guest's own uptime there) counts the VMM's
//! set-up, firmware, kernel decompression and the kernel's early boot before its clock
//! starts (a few seconds here: booted with `earlyprintk=serial`, Linux printed its
//! banner 5.3 s after cloister's start, yet its uptime at the marker was 3.5 s short of
//! the time from that banner).
//!
//! With `--disk S` every inner guest also runs the disk benchmark (`diskio`, this crate:
//! sequential 1 MiB and random 4 KiB reads and writes with O_DIRECT, S seconds each, on a
//! 64 MiB disk) after its checks, and a second table gives throughput and IOPS per VMM
//! with cloister's ratios (the exit column then includes the disk phases).
//!
//! Usage: `cargo run --release -p cloister-bench --bin nested -- [--runs N]
//! [--vmm qemu-pc,qemu-microvm,cloister] [--cloister PATH] [--disk S] [--from-log FILE]`
//! (`--from-log` re-analyses the serial log of an earlier run,
//! `target/nested-cache/bench-serial.log`, without booting).

use std::collections::BTreeMap;
use std::fmt;
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Command, ExitCode, Stdio};

/// Default number of inner boots per VMM.
const DEFAULT_RUNS: u32 = 10;
/// Seconds one inner boot may take inside the outer VM before it is killed.
const INNER_TIMEOUT_SECS: u32 = 300;
/// The inner VMMs, in the order each round boots them.
const DEFAULT_VMMS: &str = "qemu-pc,qemu-microvm,cloister";
/// The peers cloister is compared with, and the short name of each in the ratio rows.
const PEERS: [(&str, &str); 2] = [("qemu-pc", "pc"), ("qemu-microvm", "microvm")];

/// What can go wrong while benchmarking.
#[derive(Debug)]
enum BenchError {
    /// A command-line argument is wrong.
    Usage(String),
    /// The harness could not be started.
    Spawn(std::io::Error),
    /// The harness failed; its serial log is at the given path.
    Harness { status: String, log: PathBuf },
    /// A serial log given with --from-log cannot be read.
    ReadLog {
        path: PathBuf,
        error: std::io::Error,
    },
}

impl fmt::Display for BenchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Usage(msg) => write!(
                f,
                "{msg}\nusage: nested [--runs N] [--vmm {DEFAULT_VMMS}] [--cloister PATH] [--disk SECONDS] [--from-log FILE]"
            ),
            Self::Spawn(e) => write!(f, "cannot start tests/nested/run.sh: {e}"),
            Self::Harness { status, log } => write!(
                f,
                "the nested harness failed ({status}); serial log: {}",
                log.display()
            ),
            Self::ReadLog { path, error } => {
                write!(f, "cannot read the serial log {}: {error}", path.display())
            }
        }
    }
}

/// Options from the command line.
struct Options {
    runs: u32,
    vmms: String,
    cloister: Option<String>,
    /// Re-analyse a serial log of an earlier run instead of booting.
    from_log: Option<String>,
    /// Seconds per disk phase (`--disk S`), or no disk benchmark.
    disk: Option<u32>,
}

fn parse_args() -> Result<Options, BenchError> {
    let mut opts = Options {
        runs: DEFAULT_RUNS,
        vmms: DEFAULT_VMMS.to_string(),
        cloister: None,
        from_log: None,
        disk: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut next = |name: &str| {
            args.next()
                .ok_or_else(|| BenchError::Usage(format!("{name} needs a value")))
        };
        match arg.as_str() {
            "--runs" => {
                let v = next("--runs")?;
                opts.runs = v.parse().ok().filter(|n| *n > 0).ok_or_else(|| {
                    BenchError::Usage(format!("--runs must be a positive integer, got '{v}'"))
                })?;
            }
            "--vmm" => opts.vmms = next("--vmm")?,
            "--cloister" => opts.cloister = Some(next("--cloister")?),
            "--from-log" => opts.from_log = Some(next("--from-log")?),
            "--disk" => {
                let v = next("--disk")?;
                opts.disk = Some(v.parse().ok().filter(|n| (1..=60).contains(n)).ok_or_else(
                    || BenchError::Usage(format!("--disk must be 1 to 60 seconds, got '{v}'")),
                )?);
            }
            // `cargo bench` passes --bench to every bench target.
            "--bench" => {}
            other => return Err(BenchError::Usage(format!("unknown argument '{other}'"))),
        }
    }
    Ok(opts)
}

/// One inner boot as the outer /init reported it.
#[derive(Debug, Default, Clone)]
struct InnerRun {
    vmm: String,
    run: u32,
    exit: String,
    marker_s: Option<f64>,
    done_s: Option<f64>,
    exit_s: Option<f64>,
    /// The inner kernel's own uptime when its /init started (guest clock).
    guest_uptime_at_marker: Option<f64>,
    /// The disk benchmark's results (`--disk`), in [`DISK_COLUMNS`] order.
    disk: Option<[f64; 4]>,
}

impl InnerRun {
    fn ok(&self) -> bool {
        self.exit == "0" && self.marker_s.is_some() && self.done_s.is_some()
    }
}

/// The value of `key=` in a line of space-separated `key=value` pairs.
fn value<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix(key).and_then(|v| v.strip_prefix('=')))
}

fn seconds(line: &str, key: &str) -> Option<f64> {
    value(line, key).and_then(|v| v.parse().ok())
}

/// Reads the outer serial log: per-run summary lines plus the guest's own uptime line.
fn parse_runs(log: &str) -> Vec<InnerRun> {
    let mut runs = Vec::new();
    let mut uptime = None;
    let mut disk = None;
    for line in log.lines() {
        let line = line.trim_end_matches('\r');
        if line.contains("NESTED-RUN-BEGIN:") {
            uptime = None;
            disk = None;
        } else if line.contains("NESTED-LINUX: marker") && uptime.is_none() {
            uptime = seconds(line, "uptime");
        } else if let Some(at) = line.find("NESTED-DISK: ") {
            let d = &line[at..];
            let cols = DISK_COLUMNS.map(|(key, _)| seconds(d, key));
            disk = cols
                .iter()
                .all(Option::is_some)
                .then(|| cols.map(Option::unwrap_or_default));
        } else if let Some(at) = line.find("NESTED-RUN: ") {
            let summary = &line[at..];
            runs.push(InnerRun {
                vmm: value(summary, "vmm").unwrap_or("?").to_string(),
                run: value(summary, "run")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0),
                exit: value(summary, "exit").unwrap_or("none").to_string(),
                marker_s: seconds(summary, "marker_s"),
                done_s: seconds(summary, "done_s"),
                exit_s: seconds(summary, "exit_s"),
                guest_uptime_at_marker: uptime.take(),
                disk: disk.take(),
            });
        }
    }
    runs
}

fn median(mut values: Vec<f64>) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    Some(if values.len().is_multiple_of(2) {
        (values[mid - 1] + values[mid]) / 2.0
    } else {
        values[mid]
    })
}

fn show(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_string(), |s| format!("{s:.2}"))
}

/// Boots the harness and returns its serial log (also saved under the nested cache).
fn boot(opts: &Options) -> Result<String, BenchError> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(PathBuf::from)
        .unwrap_or_default();
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    let log_path = target.join("nested-cache").join("bench-serial.log");
    let vmm_count = u32::try_from(opts.vmms.split(',').count()).unwrap_or(2);
    let outer_timeout =
        300 + opts.runs * vmm_count * (INNER_TIMEOUT_SECS / 3 + 4 * opts.disk.unwrap_or(0));

    let mut cmd = Command::new("bash");
    cmd.arg(root.join("tests/nested/run.sh"))
        .args(["--vmm", &opts.vmms, "--runs", &opts.runs.to_string()])
        .arg("--quiet")
        .args(["--inner-timeout", &INNER_TIMEOUT_SECS.to_string()])
        .args(["--timeout", &outer_timeout.to_string()])
        .arg("--log")
        .arg(&log_path)
        .current_dir(&root)
        .stdin(Stdio::null())
        .stdout(Stdio::piped());
    if let Some(c) = &opts.cloister {
        cmd.args(["--cloister", c]);
    }
    if let Some(secs) = opts.disk {
        cmd.args(["--disk-bench", &secs.to_string()]);
    }
    eprintln!(
        "nested bench: {} inner boots per VMM ({}), one outer TCG boot; serial log: {}",
        opts.runs,
        opts.vmms,
        log_path.display()
    );
    let mut child = cmd.spawn().map_err(BenchError::Spawn)?;
    let mut serial = String::new();
    if let Some(out) = child.stdout.take() {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if line.contains("NESTED-RUN:") || line.contains("NESTED-OUTER:") {
                eprintln!("  {}", line.trim_end_matches('\r'));
            }
            serial.push_str(&line);
            serial.push('\n');
        }
    }
    let status = child.wait().map_err(BenchError::Spawn)?;
    if !status.success() {
        return Err(BenchError::Harness {
            status: status.to_string(),
            log: log_path,
        });
    }
    Ok(serial)
}

/// The disk benchmark's keys in its `NESTED-DISK:` line and their column heads.
const DISK_COLUMNS: [(&str, &str); 4] = [
    ("seq_read_mibs", "rd MiB/s"),
    ("seq_write_mibs", "wr MiB/s"),
    ("rand_read_iops", "rd IOPS"),
    ("rand_write_iops", "wr IOPS"),
];

/// The disk table: medians per VMM and cloister's ratio to each peer (higher is better).
fn disk_report(runs: &[InnerRun]) -> Vec<String> {
    let mut by_vmm: BTreeMap<&str, Vec<[f64; 4]>> = BTreeMap::new();
    for r in runs {
        if let Some(d) = r.disk {
            by_vmm.entry(&r.vmm).or_default().push(d);
        }
    }
    if by_vmm.is_empty() {
        return Vec::new();
    }
    let mut lines = vec![
        String::new(),
        "Disk, inside the inner guest on its virtio-blk disk (bench/src/bin/diskio.rs: \
         O_DIRECT, one request at a time; sequential in 1 MiB requests, random in 4 KiB \
         at the same fixed-seed offsets under every VMM; a 64 MiB raw image on the outer \
         VM's tmpfs); medians, higher is better"
            .to_string(),
        table_row(
            "vmm",
            "runs",
            &DISK_COLUMNS.map(|(_, head)| head.to_string()),
        ),
    ];
    let mut medians: BTreeMap<&str, Vec<Option<f64>>> = BTreeMap::new();
    for (vmm, results) in &by_vmm {
        let row: Vec<Option<f64>> = (0..DISK_COLUMNS.len())
            .map(|i| median(results.iter().map(|d| d[i]).collect()))
            .collect();
        lines.push(table_row(
            vmm,
            &results.len().to_string(),
            &row.iter().map(|v| show(*v)).collect::<Vec<_>>(),
        ));
        medians.insert(vmm, row);
    }
    for (peer, short) in PEERS {
        let (Some(c), Some(q)) = (medians.get("cloister"), medians.get(peer)) else {
            continue;
        };
        let ratios = ratio_cells(c, q);
        lines.push(table_row(&format!("c/{short}"), "", &ratios));
    }
    lines
}

/// Cloister's medians over a peer's, column by column ("-" where either is missing).
fn ratio_cells(c: &[Option<f64>], q: &[Option<f64>]) -> Vec<String> {
    c.iter()
        .zip(q)
        .map(|pair| match pair {
            (Some(c), Some(q)) if *q > 0.0 => format!("{:.2}", c / q),
            _ => "-".to_string(),
        })
        .collect()
}

/// Width of the first column of the table.
const LABEL: usize = 14;

fn table_row(label: &str, runs: &str, cells: &[String]) -> String {
    let mut line = format!("{label:<LABEL$} {runs:>7}");
    for cell in cells {
        line.push_str(&format!(" {cell:>10}"));
    }
    line
}

/// The per-run values the table shows: marker, done, exit, pre-kernel.
const COLUMNS: [fn(&InnerRun) -> Option<f64>; 4] = [
    |r| r.marker_s,
    |r| r.done_s,
    |r| r.exit_s,
    |r| Some(r.marker_s? - r.guest_uptime_at_marker?),
];

/// Formats the table of medians and ratios for the runs found in a serial log.
fn report(serial: &str) -> Vec<String> {
    let runs = parse_runs(serial);
    let mut by_vmm: BTreeMap<String, Vec<InnerRun>> = BTreeMap::new();
    for r in &runs {
        by_vmm.entry(r.vmm.clone()).or_default().push(r.clone());
    }
    let mut lines = vec![
        String::new(),
        "Nested KVM: outer QEMU TCG -cpu EPYC,+svm,+npt (1 CPU); inner Debian kernel + busybox \
         initramfs, 2 vCPUs, 256 MiB, one virtio-blk disk (virtio-blk-pci with a request queue \
         per vCPU for cloister and qemu-pc; virtio-mmio in ACPI for cloister-mmio and \
         qemu-microvm), command line console=ttyS0 panic=-1 quiet"
            .to_string(),
        "median seconds from the inner VMM's process start (outer guest clock); pre-kernel = \
         marker - the guest's own uptime at the marker (VMM set-up, firmware, decompression, \
         and the kernel's early boot before its clock starts)"
            .to_string(),
        table_row(
            "vmm",
            "ok/runs",
            &["marker", "done", "exit", "pre-kernel"].map(String::from),
        ),
    ];
    let mut medians: BTreeMap<String, Vec<Option<f64>>> = BTreeMap::new();
    for (vmm, runs) in &by_vmm {
        let ok: Vec<&InnerRun> = runs.iter().filter(|r| r.ok()).collect();
        let row: Vec<Option<f64>> = COLUMNS
            .iter()
            .map(|f| median(ok.iter().filter_map(|r| f(r)).collect()))
            .collect();
        lines.push(table_row(
            vmm,
            &format!("{}/{}", ok.len(), runs.len()),
            &row.iter().map(|v| show(*v)).collect::<Vec<_>>(),
        ));
        medians.insert(vmm.clone(), row);
        for r in runs.iter().filter(|r| !r.ok()) {
            lines.push(format!(
                "  failed run {}: vmm={} exit={} marker_s={} done_s={}",
                r.run,
                r.vmm,
                r.exit,
                show(r.marker_s),
                show(r.done_s)
            ));
        }
    }
    for (peer, short) in PEERS {
        let (Some(c), Some(q)) = (medians.get("cloister"), medians.get(peer)) else {
            continue;
        };
        let ratios = ratio_cells(c, q);
        lines.push(table_row(&format!("c/{short} median"), "", &ratios));
        // Runs are interleaved (peer n, cloister n): the median of the per-pair ratios is
        // less sensitive to the shared host's load drifting during the benchmark.
        let pair = |f: &fn(&InnerRun) -> Option<f64>| {
            let ratios = runs
                .iter()
                .filter(|c| c.vmm == "cloister" && c.ok())
                .filter_map(|c| {
                    let q = runs
                        .iter()
                        .find(|q| q.vmm == peer && q.run == c.run && q.ok())?;
                    let (cv, qv) = (f(c)?, f(q)?);
                    (qv > 0.0).then_some(cv / qv)
                })
                .collect::<Vec<f64>>();
            let n = ratios.len();
            median(ratios).map_or_else(|| "-".to_string(), |r| format!("{r:.2} ({n})"))
        };
        let pairs: Vec<String> = COLUMNS[..3].iter().map(pair).collect();
        lines.push(table_row(&format!("c/{short} pairs"), "", &pairs));
    }
    lines.extend(disk_report(&runs));
    lines.push(String::new());
    lines.push(
        "What the emulation distorts: the outer CPU is QEMU's TCG (software), so the inner \
         guest's own code runs ~10x slower than native, every VM exit goes through an emulated \
         SVM (#VMEXIT, kvm_amd, then back) and costs ~60-100 us instead of ~1 us, and both inner \
         vCPUs share one emulated outer CPU with the VMM's own threads. Exit-heavy work (serial \
         and port I/O, APIC timer, virtio notifications, firmware) is inflated far more than \
         guest compute, and the VMMs' own start-up (exec, dynamic linking for QEMU, memory \
         set-up, kernel loading) runs on the emulated CPU too. The host machine is shared, so \
         absolute times drift; runs are interleaved so that drift hits every VMM alike. Read \
         the ratios, not the seconds."
            .to_string(),
    );
    lines
}

fn main() -> ExitCode {
    let result = parse_args().and_then(|opts| match &opts.from_log {
        Some(path) => std::fs::read_to_string(path).map_err(|e| BenchError::ReadLog {
            path: PathBuf::from(path),
            error: e,
        }),
        None => boot(&opts),
    });
    match result {
        Ok(serial) => {
            let mut out = std::io::stdout().lock();
            for line in report(&serial) {
                if writeln!(out, "{line}").is_err() {
                    return ExitCode::FAILURE;
                }
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("nested bench: error: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_summary_and_uptime_per_run() {
        let log = "NESTED-RUN-BEGIN: vmm=qemu-pc run=1\n\
                   31.7 NESTED-LINUX: marker uptime=12.50\r\n\
                   NESTED-RUN: vmm=qemu-pc run=1 exit=0 marker_s=31.7 done_s=33.6 exit_s=34.4\n\
                   NESTED-RUN-BEGIN: vmm=cloister run=1\n\
                   NESTED-RUN: vmm=cloister run=1 exit=1 marker_s=none done_s=none exit_s=2.0\n";
        let runs = parse_runs(log);
        assert_eq!(runs.len(), 2);
        assert_eq!(runs[0].vmm, "qemu-pc");
        assert!(runs[0].ok());
        assert_eq!(runs[0].guest_uptime_at_marker, Some(12.5));
        assert_eq!(runs[0].done_s, Some(33.6));
        assert_eq!(runs[1].vmm, "cloister");
        assert!(!runs[1].ok());
        assert_eq!(runs[1].marker_s, None);
        assert_eq!(runs[1].guest_uptime_at_marker, None);
    }

    #[test]
    fn report_gives_medians_and_pairwise_ratios() {
        let log = "NESTED-RUN: vmm=qemu-microvm run=1 exit=0 marker_s=10 done_s=12 exit_s=13\n\
                   NESTED-RUN: vmm=qemu-pc run=1 exit=0 marker_s=20 done_s=22 exit_s=23\n\
                   NESTED-RUN: vmm=cloister run=1 exit=0 marker_s=5 done_s=6 exit_s=6.5\n\
                   NESTED-RUN: vmm=qemu-microvm run=2 exit=0 marker_s=20 done_s=24 exit_s=26\n\
                   NESTED-RUN: vmm=qemu-pc run=2 exit=0 marker_s=40 done_s=44 exit_s=46\n\
                   NESTED-RUN: vmm=cloister run=2 exit=0 marker_s=30 done_s=36 exit_s=39\n\
                   NESTED-RUN: vmm=cloister run=3 exit=143 marker_s=none done_s=none exit_s=300\n";
        let lines = report(log);
        let table = lines.join("\n");
        let row = |prefix: &str| -> Vec<String> {
            lines
                .iter()
                .find(|l| l.starts_with(prefix))
                .map(|l| l.split_whitespace().map(String::from).collect())
                .unwrap_or_default()
        };
        // medians: microvm marker 15, pc 30, cloister 17.5 over its 2 good runs.
        assert_eq!(row("qemu-microvm ")[1..3], ["2/2", "15.00"], "{table}");
        assert_eq!(row("qemu-pc ")[1..3], ["2/2", "30.00"], "{table}");
        assert_eq!(row("cloister ")[1..3], ["2/3", "17.50"], "{table}");
        assert!(
            table.contains("failed run 3: vmm=cloister exit=143"),
            "{table}"
        );
        assert_eq!(row("c/microvm median")[2], "1.17", "{table}");
        assert_eq!(row("c/pc median")[2], "0.58", "{table}");
        // pairs: 5/10 = 0.5 and 30/20 = 1.5, median 1.0 over 2 pairs; against pc 0.25 and 0.75.
        assert_eq!(row("c/microvm pairs")[2..4], ["1.00", "(2)"], "{table}");
        assert_eq!(row("c/pc pairs")[2..4], ["0.50", "(2)"], "{table}");
        // The exit column: 6.5/13 = 0.5 and 39/26 = 1.5 against microvm.
        assert_eq!(row("c/microvm pairs")[6..8], ["1.00", "(2)"], "{table}");
    }

    #[test]
    fn disk_results_are_tabled_with_ratios() {
        let log = "NESTED-RUN-BEGIN: vmm=qemu-pc run=1\n\
                   NESTED-DISK: size_mib=64 seq_read_mibs=100 seq_write_mibs=50 rand_read_iops=1000 rand_write_iops=800\n\
                   NESTED-RUN: vmm=qemu-pc run=1 exit=0 marker_s=20 done_s=22 exit_s=23\n\
                   NESTED-RUN-BEGIN: vmm=cloister run=1\n\
                   NESTED-DISK: size_mib=64 seq_read_mibs=150 seq_write_mibs=25 rand_read_iops=2000 rand_write_iops=400\n\
                   NESTED-RUN: vmm=cloister run=1 exit=0 marker_s=5 done_s=6 exit_s=6.5\n\
                   NESTED-RUN-BEGIN: vmm=cloister run=2\n\
                   NESTED-DISK: error=cannot_open\n\
                   NESTED-RUN: vmm=cloister run=2 exit=0 marker_s=5 done_s=6 exit_s=6.5\n";
        let runs = parse_runs(log);
        assert_eq!(runs[0].disk, Some([100.0, 50.0, 1000.0, 800.0]));
        assert_eq!(runs[2].disk, None, "an error line is no result");
        let lines = report(log);
        let table = lines.join("\n");
        let row = |prefix: &str| -> Vec<String> {
            lines
                .iter()
                .rev()
                .find(|l| l.starts_with(prefix))
                .map(|l| l.split_whitespace().map(String::from).collect())
                .unwrap_or_default()
        };
        assert_eq!(
            row("cloister ")[1..6],
            ["1", "150.00", "25.00", "2000.00", "400.00"],
            "{table}"
        );
        assert_eq!(
            row("c/pc ")[1..5],
            ["1.50", "0.50", "2.00", "0.50"],
            "{table}"
        );
    }

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(Vec::new()), None);
    }
}
