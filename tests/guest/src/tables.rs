//! Counting the CPUs the firmware tables describe: the Intel MultiProcessor table (found
//! in the EBDA, the last KiB of base memory or the BIOS area) and the ACPI MADT (through
//! the RSDP). Reads go through [`PhysMem`], so the host tests can run this on byte arrays.

/// Read access to guest-physical memory.
pub trait PhysMem {
    /// Copies the bytes at `addr` into `buf`; `false` if they cannot be read.
    fn read(&self, addr: u64, buf: &mut [u8]) -> bool;
}

/// The outcome of looking for one table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CpuCount {
    /// The table was found and lists this many enabled CPUs.
    Found(u32),
    /// No such table.
    Missing,
    /// A table was found but is malformed.
    Invalid(&'static str),
}

/// Largest table length believed.
const MAX_TABLE_LEN: u32 = 64 * 1024;

fn read_u16<M: PhysMem + ?Sized>(mem: &M, addr: u64) -> Option<u16> {
    let mut b = [0u8; 2];
    mem.read(addr, &mut b).then(|| u16::from_le_bytes(b))
}

fn read_u32<M: PhysMem + ?Sized>(mem: &M, addr: u64) -> Option<u32> {
    let mut b = [0u8; 4];
    mem.read(addr, &mut b).then(|| u32::from_le_bytes(b))
}

fn read_u64<M: PhysMem + ?Sized>(mem: &M, addr: u64) -> Option<u64> {
    let mut b = [0u8; 8];
    mem.read(addr, &mut b).then(|| u64::from_le_bytes(b))
}

/// Byte sum of `len` bytes at `addr` (a valid table sums to 0), `None` if unreadable.
fn checksum<M: PhysMem + ?Sized>(mem: &M, addr: u64, len: u32) -> Option<u8> {
    let mut sum = 0u8;
    let mut buf = [0u8; 64];
    let mut done = 0u32;
    while done < len {
        let n = (len - done).min(64) as usize;
        if !mem.read(addr + u64::from(done), &mut buf[..n]) {
            return None;
        }
        sum = buf[..n].iter().fold(sum, |s, b| s.wrapping_add(*b));
        done += n as u32;
    }
    Some(sum)
}

/// Finds a 16-byte aligned `signature` in `[start, start + len)` whose `checked_len`
/// bytes sum to zero.
fn scan<M: PhysMem + ?Sized>(
    mem: &M,
    start: u64,
    len: u64,
    signature: &[u8; 8],
    sig_len: usize,
    checked_len: u32,
) -> Option<u64> {
    let mut addr = start & !15;
    let mut sig = [0u8; 8];
    while addr + 16 <= start + len {
        if mem.read(addr, &mut sig[..sig_len])
            && sig[..sig_len] == signature[..sig_len]
            && checksum(mem, addr, checked_len) == Some(0)
        {
            return Some(addr);
        }
        addr += 16;
    }
    None
}

/// Where firmware tables are looked for: the EBDA (its segment is at 0x40e), the last KiB
/// of base memory, then the BIOS area from `bios_start` to 1 MiB.
fn search_areas<M: PhysMem + ?Sized>(mem: &M, bios_start: u64) -> [(u64, u64); 3] {
    let ebda = read_u16(mem, 0x40e).map_or(0, |seg| u64::from(seg) << 4);
    let ebda = if (0x80000..0xa0000).contains(&ebda) {
        ebda
    } else {
        0x9fc00
    };
    [
        (ebda, 1024),
        (0x9fc00, 1024),
        (bios_start, 0x100000 - bios_start),
    ]
}

/// Counts the enabled processor entries of the MP configuration table.
pub fn mp_table_cpus<M: PhysMem + ?Sized>(mem: &M) -> CpuCount {
    let floating = search_areas(mem, 0xf0000)
        .iter()
        .find_map(|&(start, len)| scan(mem, start, len, b"_MP_\0\0\0\0", 4, 16));
    let Some(floating) = floating else {
        return CpuCount::Missing;
    };
    let Some(config) = read_u32(mem, floating + 4) else {
        return CpuCount::Invalid("MP floating pointer unreadable");
    };
    if config == 0 {
        return CpuCount::Invalid("MP default configurations are not supported");
    }
    let config = u64::from(config);
    let mut sig = [0u8; 4];
    if !mem.read(config, &mut sig) || &sig != b"PCMP" {
        return CpuCount::Invalid("MP configuration table signature is not PCMP");
    }
    let Some(base_len) = read_u16(mem, config + 4) else {
        return CpuCount::Invalid("MP configuration table unreadable");
    };
    if base_len < 44 || checksum(mem, config, u32::from(base_len)) != Some(0) {
        return CpuCount::Invalid("MP configuration table checksum or length is wrong");
    }
    // Entries are walked by the table's length, as Linux does: some firmware (QEMU's
    // qboot) leaves the entry count at 0.
    let end = config + u64::from(base_len);
    let mut at = config + 44;
    let mut cpus = 0;
    while at < end {
        let mut head = [0u8; 4];
        if !mem.read(at, &mut head) {
            return CpuCount::Invalid("MP entries unreadable");
        }
        let len = match head[0] {
            0 => {
                if head[3] & 1 != 0 {
                    cpus += 1;
                }
                20
            }
            1..=4 => 8,
            _ => return CpuCount::Invalid("MP entry of unknown type"),
        };
        at += len;
    }
    if at > end {
        return CpuCount::Invalid("MP entries run past the table");
    }
    CpuCount::Found(cpus)
}

/// Finds the RSDP: at `hint` when the loader gave one, else by scanning.
pub fn find_rsdp<M: PhysMem + ?Sized>(mem: &M, hint: u64) -> Option<u64> {
    if hint != 0 {
        let mut sig = [0u8; 8];
        return (mem.read(hint, &mut sig)
            && &sig == b"RSD PTR "
            && checksum(mem, hint, 20) == Some(0))
        .then_some(hint);
    }
    search_areas(mem, 0xe0000)
        .iter()
        .find_map(|&(start, len)| scan(mem, start, len, b"RSD PTR ", 8, 20))
}

/// Counts the enabled local APIC and x2APIC entries of the MADT reached from `rsdp_hint`
/// (0: scan for the RSDP).
pub fn madt_cpus<M: PhysMem + ?Sized>(mem: &M, rsdp_hint: u64) -> CpuCount {
    let Some(rsdp) = find_rsdp(mem, rsdp_hint) else {
        return if rsdp_hint == 0 {
            CpuCount::Missing
        } else {
            CpuCount::Invalid("no valid RSDP at the address the loader gave")
        };
    };
    let mut revision = [0u8; 1];
    if !mem.read(rsdp + 15, &mut revision) {
        return CpuCount::Invalid("RSDP unreadable");
    }
    let xsdt = if revision[0] >= 2 {
        read_u64(mem, rsdp + 24).unwrap_or(0)
    } else {
        0
    };
    let (root, entry_size) = if xsdt != 0 {
        (xsdt, 8)
    } else {
        (u64::from(read_u32(mem, rsdp + 16).unwrap_or(0)), 4)
    };
    let Some(root_len) = valid_sdt(mem, root) else {
        return CpuCount::Invalid("RSDT/XSDT missing or its checksum is wrong");
    };
    let entries = (u64::from(root_len) - 36) / entry_size;
    for i in 0..entries {
        let at = root + 36 + i * entry_size;
        let table = if entry_size == 8 {
            read_u64(mem, at)
        } else {
            read_u32(mem, at).map(u64::from)
        };
        let Some(table) = table else {
            return CpuCount::Invalid("RSDT/XSDT entry unreadable");
        };
        let mut sig = [0u8; 4];
        if !mem.read(table, &mut sig) || &sig != b"APIC" {
            continue;
        }
        let Some(len) = valid_sdt(mem, table) else {
            return CpuCount::Invalid("MADT checksum or length is wrong");
        };
        return count_madt(mem, table, len);
    }
    CpuCount::Missing
}

/// Length of the ACPI table at `addr` if its header is sane and its checksum right.
fn valid_sdt<M: PhysMem + ?Sized>(mem: &M, addr: u64) -> Option<u32> {
    if addr == 0 {
        return None;
    }
    let len = read_u32(mem, addr + 4)?;
    if !(36..=MAX_TABLE_LEN).contains(&len) || checksum(mem, addr, len)? != 0 {
        return None;
    }
    Some(len)
}

fn count_madt<M: PhysMem + ?Sized>(mem: &M, madt: u64, len: u32) -> CpuCount {
    let end = madt + u64::from(len);
    let mut at = madt + 44;
    let mut cpus = 0;
    while at < end {
        let mut head = [0u8; 2];
        if !mem.read(at, &mut head) || head[1] < 2 || at + u64::from(head[1]) > end {
            return CpuCount::Invalid("MADT entry runs past the table");
        }
        let flags = match (head[0], head[1]) {
            (0, 8) => read_u32(mem, at + 4),
            (9, 16) => read_u32(mem, at + 8),
            (0, _) | (9, _) => return CpuCount::Invalid("MADT APIC entry of the wrong length"),
            _ => Some(0),
        };
        if flags.unwrap_or(0) & 1 != 0 {
            cpus += 1;
        }
        at += u64::from(head[1]);
    }
    CpuCount::Found(cpus)
}
