//! What every table shares: the OEM identification Cloister writes, and the system
//! description table header with its length and checksum (ACPI 6.5 section 5.2.6), which
//! the `acpi_tables` crate fills in. The crate also serialises the RSDP and the XSDT.

use acpi_tables::rsdp::Rsdp;
use acpi_tables::sdt::Sdt;
use acpi_tables::xsdt::XSDT;
use acpi_tables::Aml;

/// OEM ID written in every table and the RSDP.
pub const OEM_ID: [u8; 6] = *b"CLSTER";
/// OEM table ID written in every table.
pub const OEM_TABLE_ID: [u8; 8] = *b"CLOISTER";
/// OEM revision written in every table.
pub const OEM_REVISION: u32 = 1;
/// Length of the system description table header.
pub const HEADER_LEN: usize = 36;

/// The bytes `aml` (a table, a structure or an AML object) serialises to.
pub fn to_bytes(aml: &dyn Aml) -> Vec<u8> {
    let mut bytes = Vec::new();
    aml.to_aml_bytes(&mut bytes);
    bytes
}

/// A table with `signature` and `revision` whose header is followed by `body`; the crate
/// sets its length and checksum.
pub fn table(signature: [u8; 4], revision: u8, body: &[u8]) -> Vec<u8> {
    let mut t = Sdt::new(
        signature,
        HEADER_LEN as u32,
        revision,
        OEM_ID,
        OEM_TABLE_ID,
        OEM_REVISION,
    );
    t.append_slice(body);
    t.as_slice().to_vec()
}

/// The Root System Description Pointer, ACPI 2.0+ form (36 bytes, revision 2), pointing
/// at the XSDT only (its RSDT address is 0).
pub fn rsdp(xsdt_addr: u64) -> Vec<u8> {
    to_bytes(&Rsdp::new(OEM_ID, xsdt_addr))
}

/// The Extended System Description Table listing the 64-bit addresses of `tables`.
pub fn xsdt(tables: &[u64]) -> Vec<u8> {
    let mut xsdt = XSDT::new(OEM_ID, OEM_TABLE_ID, OEM_REVISION);
    for &addr in tables {
        xsdt.add_entry(addr);
    }
    to_bytes(&xsdt)
}
