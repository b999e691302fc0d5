//! The disk half of benchmark 7b: runs *inside* the nested harness's inner guest
//! (statically linked, copied into its initramfs by `tests/nested/run.sh --disk-bench`),
//! on the guest's virtio-blk disk, so that every inner VMM is measured on the same guest,
//! the same disk image and the same I/O pattern. The guest's page cache is bypassed
//! (`O_DIRECT`), so every request reaches the VMM's device.
//!
//! Four phases, each for a fixed time, one request at a time (queue depth 1, as `dd` or
//! `fio --iodepth=1` would issue them), over the disk from `--skip-mib` on (the harness's
//! marker lives in the first MiB):
//! - sequential read and write in 1 MiB requests, wrapping at the end of the disk;
//! - 4 KiB random read and write at offsets from a fixed-seed generator (the same
//!   offsets under every VMM).
//!
//! Prints one line the harness's bench parser reads:
//! `NESTED-DISK: size_mib=N seq_read_mibs=X seq_write_mibs=Y rand_read_iops=Z rand_write_iops=W`
//!
//! Usage: `diskio DEVICE [--seconds S] [--skip-mib M]`

use std::fmt;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::process::ExitCode;
use std::time::{Duration, Instant};

const MIB: u64 = 1 << 20;
const SEQ_BLOCK: usize = 1 << 20;
const RAND_BLOCK: usize = 4096;

#[derive(Debug)]
enum DiskError {
    Usage(String),
    Open(String, std::io::Error),
    Size(String, std::io::Error),
    TooSmall {
        device: String,
        size: u64,
    },
    Io {
        what: &'static str,
        offset: u64,
        error: std::io::Error,
    },
    Short {
        what: &'static str,
        offset: u64,
        done: usize,
    },
}

impl fmt::Display for DiskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Usage(m) => write!(f, "{m}\nusage: diskio DEVICE [--seconds S] [--skip-mib M]"),
            Self::Open(d, e) => write!(f, "cannot open {d} with O_DIRECT: {e}"),
            Self::Size(d, e) => write!(f, "cannot find the size of {d}: {e}"),
            Self::TooSmall { device, size } => write!(
                f,
                "{device} holds {size} bytes: too small for 1 MiB requests past the skipped area"
            ),
            Self::Io {
                what,
                offset,
                error,
            } => write!(f, "{what} at byte {offset} failed: {error}"),
            Self::Short { what, offset, done } => {
                write!(f, "{what} at byte {offset} moved only {done} bytes")
            }
        }
    }
}

/// A buffer aligned for O_DIRECT (4 KiB), freed on drop.
struct Aligned {
    ptr: *mut u8,
    layout: std::alloc::Layout,
}

impl Aligned {
    fn new(len: usize) -> Self {
        let layout = match std::alloc::Layout::from_size_align(len, 4096) {
            Ok(l) => l,
            Err(_) => std::process::abort(),
        };
        // SAFETY: the layout has a non-zero size (every caller passes a block size).
        let ptr = unsafe { std::alloc::alloc_zeroed(layout) };
        if ptr.is_null() {
            std::alloc::handle_alloc_error(layout);
        }
        Self { ptr, layout }
    }

    fn bytes(&mut self) -> &mut [u8] {
        // SAFETY: ptr is a live, zero-initialised allocation of layout.size() bytes that
        // only this value references.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.layout.size()) }
    }
}

impl Drop for Aligned {
    fn drop(&mut self) {
        // SAFETY: allocated in new() with this layout, freed once.
        unsafe { std::alloc::dealloc(self.ptr, self.layout) }
    }
}

/// xorshift64*: the same offsets on every run.
struct Offsets(u64);

impl Offsets {
    fn next(&mut self, blocks: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % blocks
    }
}

struct Disk {
    file: File,
    start: u64,
    end: u64,
}

impl Disk {
    fn transfer(
        &self,
        what: &'static str,
        write: bool,
        buf: &mut [u8],
        offset: u64,
    ) -> Result<(), DiskError> {
        let done = if write {
            self.file.write_at(buf, offset)
        } else {
            self.file.read_at(buf, offset)
        }
        .map_err(|error| DiskError::Io {
            what,
            offset,
            error,
        })?;
        if done != buf.len() {
            return Err(DiskError::Short { what, offset, done });
        }
        Ok(())
    }

    /// Runs `what` for `time`, one `block`-sized request at a time; returns requests done
    /// and the seconds they took.
    fn phase(
        &self,
        what: &'static str,
        write: bool,
        block: usize,
        time: Duration,
        mut offset_of: impl FnMut(u64) -> u64,
    ) -> Result<(u64, f64), DiskError> {
        let mut buf = Aligned::new(block);
        buf.bytes().fill(0x5a);
        let start = Instant::now();
        let mut n = 0u64;
        while start.elapsed() < time {
            self.transfer(what, write, buf.bytes(), offset_of(n))?;
            n += 1;
        }
        Ok((n, start.elapsed().as_secs_f64()))
    }
}

fn run() -> Result<String, DiskError> {
    let mut args = std::env::args().skip(1);
    let mut device = None;
    let mut seconds = 2.0f64;
    let mut skip_mib = 1u64;
    while let Some(a) = args.next() {
        let mut value = |name: &str| {
            args.next()
                .ok_or_else(|| DiskError::Usage(format!("{name} needs a value")))
        };
        match a.as_str() {
            "--seconds" => {
                let v = value("--seconds")?;
                seconds = v
                    .parse()
                    .ok()
                    .filter(|s: &f64| s.is_finite() && *s > 0.0 && *s <= 600.0)
                    .ok_or_else(|| {
                        DiskError::Usage(format!("--seconds: '{v}' is not 0 < S <= 600"))
                    })?;
            }
            "--skip-mib" => {
                let v = value("--skip-mib")?;
                skip_mib = v
                    .parse()
                    .map_err(|_| DiskError::Usage(format!("--skip-mib: '{v}' is not a number")))?;
            }
            d if device.is_none() && !d.starts_with('-') => device = Some(d.to_string()),
            other => return Err(DiskError::Usage(format!("unexpected argument '{other}'"))),
        }
    }
    let device = device.ok_or_else(|| DiskError::Usage("no DEVICE given".into()))?;
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_DIRECT)
        .open(&device)
        .map_err(|e| DiskError::Open(device.clone(), e))?;
    // A block device's size is where seeking to its end lands.
    let size = {
        use std::io::Seek;
        (&file)
            .seek(std::io::SeekFrom::End(0))
            .map_err(|e| DiskError::Size(device.clone(), e))?
    };
    let start = skip_mib.saturating_mul(MIB);
    let end = size / MIB * MIB;
    if end < start.saturating_add(MIB) {
        return Err(DiskError::TooSmall { device, size });
    }
    let disk = Disk { file, start, end };
    let time = Duration::from_secs_f64(seconds);
    let seq_blocks = (disk.end - disk.start) / SEQ_BLOCK as u64;
    let rand_blocks = (disk.end - disk.start) / RAND_BLOCK as u64;
    let seq = |n: u64| disk.start + (n % seq_blocks) * SEQ_BLOCK as u64;
    let mut rng = Offsets(0x9e37_79b9_7f4a_7c15);
    let (sr, sr_s) = disk.phase("sequential read", false, SEQ_BLOCK, time, seq)?;
    let (sw, sw_s) = disk.phase("sequential write", true, SEQ_BLOCK, time, seq)?;
    let (rr, rr_s) = disk.phase("random read", false, RAND_BLOCK, time, |_| {
        disk.start + rng.next(rand_blocks) * RAND_BLOCK as u64
    })?;
    let mut rng = Offsets(0x9e37_79b9_7f4a_7c15);
    let (rw, rw_s) = disk.phase("random write", true, RAND_BLOCK, time, |_| {
        disk.start + rng.next(rand_blocks) * RAND_BLOCK as u64
    })?;
    Ok(format!(
        "NESTED-DISK: size_mib={} seq_read_mibs={:.2} seq_write_mibs={:.2} rand_read_iops={:.1} rand_write_iops={:.1}",
        size / MIB,
        sr as f64 / sr_s,
        sw as f64 / sw_s,
        rr as f64 / rr_s,
        rw as f64 / rw_s,
    ))
}

fn main() -> ExitCode {
    match run() {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            let first = e.to_string();
            let first = first.lines().next().unwrap_or_default().replace(' ', "_");
            println!("NESTED-DISK: error={first}");
            eprintln!("diskio: {e}");
            ExitCode::FAILURE
        }
    }
}
