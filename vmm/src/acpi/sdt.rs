//! The pieces every ACPI table shares: the 36-byte system description table header, the
//! checksum, and the Generic Address Structure (ACPI 6.5 sections 5.2.6, 5.2.3.2).

/// OEM ID written in every table.
pub const OEM_ID: [u8; 6] = *b"CLSTER";
/// OEM table ID written in every table.
pub const OEM_TABLE_ID: [u8; 8] = *b"CLOISTER";
/// Creator ID written in every table.
pub const CREATOR_ID: [u8; 4] = *b"CLST";
/// Length of the system description table header.
pub const HEADER_LEN: usize = 36;
/// Offset of the checksum byte in a table header.
pub const CHECKSUM_OFFSET: usize = 9;

/// The byte that makes all bytes of `bytes` (plus itself) sum to zero modulo 256.
pub fn checksum(bytes: &[u8]) -> u8 {
    0u8.wrapping_sub(bytes.iter().fold(0u8, |acc, b| acc.wrapping_add(*b)))
}

/// A table under construction: header first, body appended, length and checksum filled
/// by [`Sdt::finish`].
#[derive(Debug, Clone)]
pub struct Sdt {
    bytes: Vec<u8>,
}

impl Sdt {
    /// A table with `signature` and `revision` and an empty body.
    pub fn new(signature: [u8; 4], revision: u8) -> Self {
        let mut bytes = Vec::with_capacity(256);
        bytes.extend_from_slice(&signature);
        bytes.extend_from_slice(&0u32.to_le_bytes()); // length, set by finish()
        bytes.push(revision);
        bytes.push(0); // checksum, set by finish()
        bytes.extend_from_slice(&OEM_ID);
        bytes.extend_from_slice(&OEM_TABLE_ID);
        bytes.extend_from_slice(&1u32.to_le_bytes()); // OEM revision
        bytes.extend_from_slice(&CREATOR_ID);
        bytes.extend_from_slice(&1u32.to_le_bytes()); // creator revision
        Self { bytes }
    }

    /// Appends raw bytes to the body.
    pub fn push(&mut self, data: &[u8]) -> &mut Self {
        self.bytes.extend_from_slice(data);
        self
    }

    /// Appends a byte.
    pub fn u8(&mut self, v: u8) -> &mut Self {
        self.push(&[v])
    }

    /// Appends a little-endian u16.
    pub fn u16(&mut self, v: u16) -> &mut Self {
        self.push(&v.to_le_bytes())
    }

    /// Appends a little-endian u32.
    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.push(&v.to_le_bytes())
    }

    /// Appends a little-endian u64.
    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.push(&v.to_le_bytes())
    }

    /// Appends `n` zero bytes.
    pub fn zeros(&mut self, n: usize) -> &mut Self {
        self.bytes.resize(self.bytes.len() + n, 0);
        self
    }

    /// Current length in bytes.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// True when nothing was written (never: the header is always there).
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// Sets the length and checksum fields and returns the table's bytes.
    pub fn finish(mut self) -> Vec<u8> {
        let len = u32::try_from(self.bytes.len()).unwrap_or(u32::MAX);
        self.bytes[4..8].copy_from_slice(&len.to_le_bytes());
        self.bytes[CHECKSUM_OFFSET] = 0;
        self.bytes[CHECKSUM_OFFSET] = checksum(&self.bytes);
        self.bytes
    }
}

/// Address space ID of a Generic Address Structure: system I/O ports.
pub const GAS_SYSTEM_IO: u8 = 1;
/// Access size of a Generic Address Structure: byte access.
pub const GAS_ACCESS_BYTE: u8 = 1;

/// A Generic Address Structure for a one-byte I/O port register.
pub fn gas_io_port_u8(port: u16) -> [u8; 12] {
    let mut gas = [0u8; 12];
    gas[0] = GAS_SYSTEM_IO;
    gas[1] = 8; // register bit width
    gas[2] = 0; // register bit offset
    gas[3] = GAS_ACCESS_BYTE;
    gas[4..12].copy_from_slice(&u64::from(port).to_le_bytes());
    gas
}

/// The Root System Description Pointer, ACPI 2.0+ form (36 bytes), pointing at the XSDT.
pub fn rsdp(xsdt_addr: u64) -> [u8; 36] {
    let mut r = [0u8; 36];
    r[0..8].copy_from_slice(b"RSD PTR ");
    r[9..15].copy_from_slice(&OEM_ID);
    r[15] = 2; // revision: ACPI 2.0 or later
               // RsdtAddress (16..20) stays 0: only the XSDT is provided.
    r[20..24].copy_from_slice(&36u32.to_le_bytes());
    r[24..32].copy_from_slice(&xsdt_addr.to_le_bytes());
    r[8] = checksum(&r[0..20]);
    r[32] = checksum(&r);
    r
}

/// The Extended System Description Table listing the 64-bit addresses of `tables`.
pub fn xsdt(tables: &[u64]) -> Vec<u8> {
    let mut t = Sdt::new(*b"XSDT", 1);
    for &addr in tables {
        t.u64(addr);
    }
    t.finish()
}
