//! The small subset of AML (ACPI 6.5 chapter 20) and resource descriptors (section 6.4)
//! the DSDT needs: Scope, Device, Name, Package, integers, strings, EISA IDs and
//! resource templates with IO, IRQ, Memory32Fixed and Extended Interrupt descriptors.
//!
//! Every encoder appends to a byte vector; a term's children are encoded first, then
//! wrapped with their PkgLength.

const ZERO_OP: u8 = 0x00;
const ONE_OP: u8 = 0x01;
const NAME_OP: u8 = 0x08;
const BYTE_PREFIX: u8 = 0x0a;
const WORD_PREFIX: u8 = 0x0b;
const DWORD_PREFIX: u8 = 0x0c;
const STRING_PREFIX: u8 = 0x0d;
const QWORD_PREFIX: u8 = 0x0e;
const SCOPE_OP: u8 = 0x10;
const BUFFER_OP: u8 = 0x11;
const PACKAGE_OP: u8 = 0x12;
const EXT_OP_PREFIX: u8 = 0x5b;
const DEVICE_OP: u8 = 0x82;
const ROOT_CHAR: u8 = b'\\';

/// Errors encoding AML.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum AmlError {
    /// A name segment is not 1 to 4 characters of A-Z, 0-9 and `_` starting with a
    /// letter or `_`.
    #[error("AML name segment {0:?} is not 1-4 characters [A-Z_][A-Z0-9_]*")]
    BadName(String),
    /// A string holds a NUL or non-ASCII character.
    #[error("AML string {0:?} must be ASCII without NUL")]
    BadString(String),
    /// An EISA ID is not three letters and four hex digits.
    #[error("EISA ID {0:?} is not three capital letters and four hex digits")]
    BadEisaId(String),
    /// A term is longer than a PkgLength can describe (256 MiB).
    #[error("AML term of {0} bytes is too long")]
    TooLong(usize),
}

/// Encodes a PkgLength covering `payload` bytes that follow it (the encoded length
/// counts its own bytes).
pub fn pkg_length(payload: usize) -> Result<Vec<u8>, AmlError> {
    for n in 1..=4usize {
        let total = payload + n;
        let limit = if n == 1 {
            1 << 6
        } else {
            1 << (4 + 8 * (n - 1))
        };
        if total < limit {
            if n == 1 {
                return Ok(vec![total as u8]);
            }
            let mut out = vec![(((n - 1) as u8) << 6) | (total & 0xf) as u8];
            for i in 1..n {
                out.push((total >> (4 + 8 * (i - 1))) as u8);
            }
            return Ok(out);
        }
    }
    Err(AmlError::TooLong(payload))
}

/// A 4-character NameSeg, padded with `_`.
pub fn name_seg(name: &str) -> Result<[u8; 4], AmlError> {
    let bytes = name.as_bytes();
    let lead_ok = bytes
        .first()
        .is_some_and(|c| c.is_ascii_uppercase() || *c == b'_');
    let rest_ok = bytes
        .iter()
        .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == b'_');
    if bytes.len() > 4 || !lead_ok || !rest_ok {
        return Err(AmlError::BadName(name.to_string()));
    }
    let mut seg = [b'_'; 4];
    seg[..bytes.len()].copy_from_slice(bytes);
    Ok(seg)
}

/// A NameString: `\NAME` (root-relative) or `NAME` (one segment).
pub fn name_string(path: &str) -> Result<Vec<u8>, AmlError> {
    match path.strip_prefix('\\') {
        Some(seg) => {
            let mut out = vec![ROOT_CHAR];
            out.extend_from_slice(&name_seg(seg)?);
            Ok(out)
        }
        None => Ok(name_seg(path)?.to_vec()),
    }
}

/// An integer in its shortest encoding.
pub fn integer(v: u64) -> Vec<u8> {
    match v {
        0 => vec![ZERO_OP],
        1 => vec![ONE_OP],
        2..=0xff => vec![BYTE_PREFIX, v as u8],
        0x100..=0xffff => [&[WORD_PREFIX][..], &(v as u16).to_le_bytes()].concat(),
        0x1_0000..=0xffff_ffff => [&[DWORD_PREFIX][..], &(v as u32).to_le_bytes()].concat(),
        _ => [&[QWORD_PREFIX][..], &v.to_le_bytes()].concat(),
    }
}

/// A string constant.
pub fn string(s: &str) -> Result<Vec<u8>, AmlError> {
    if !s.is_ascii() || s.contains('\0') {
        return Err(AmlError::BadString(s.to_string()));
    }
    let mut out = vec![STRING_PREFIX];
    out.extend_from_slice(s.as_bytes());
    out.push(0);
    Ok(out)
}

/// A compressed EISA ID such as `PNP0501`, as the DWord integer ASL's `EisaId()` makes.
pub fn eisa_id(id: &str) -> Result<Vec<u8>, AmlError> {
    let b = id.as_bytes();
    let bad = || AmlError::BadEisaId(id.to_string());
    if b.len() != 7
        || !b[..3].iter().all(u8::is_ascii_uppercase)
        || !b[3..].iter().all(u8::is_ascii_hexdigit)
    {
        return Err(bad());
    }
    let hex = u16::from_str_radix(&id[3..], 16).map_err(|_| bad())?;
    let letters =
        (u16::from(b[0] - 0x40) << 10) | (u16::from(b[1] - 0x40) << 5) | u16::from(b[2] - 0x40);
    let [l0, l1] = letters.to_be_bytes();
    let [h0, h1] = hex.to_be_bytes();
    Ok(integer(u64::from(u32::from_le_bytes([l0, l1, h0, h1]))))
}

/// `Name(name, value)`.
pub fn name(name: &str, value: &[u8]) -> Result<Vec<u8>, AmlError> {
    let mut out = vec![NAME_OP];
    out.extend_from_slice(&name_string(name)?);
    out.extend_from_slice(value);
    Ok(out)
}

fn with_pkg_length(prefix: &[u8], body: &[u8]) -> Result<Vec<u8>, AmlError> {
    let mut out = prefix.to_vec();
    out.extend_from_slice(&pkg_length(body.len())?);
    out.extend_from_slice(body);
    Ok(out)
}

/// `Scope(path) { children }`.
pub fn scope(path: &str, children: &[u8]) -> Result<Vec<u8>, AmlError> {
    let mut body = name_string(path)?;
    body.extend_from_slice(children);
    with_pkg_length(&[SCOPE_OP], &body)
}

/// `Device(name) { children }`.
pub fn device(name: &str, children: &[u8]) -> Result<Vec<u8>, AmlError> {
    let mut body = name_string(name)?;
    body.extend_from_slice(children);
    with_pkg_length(&[EXT_OP_PREFIX, DEVICE_OP], &body)
}

/// `Package() { elements }` of already-encoded elements.
pub fn package(elements: &[Vec<u8>]) -> Result<Vec<u8>, AmlError> {
    let count = u8::try_from(elements.len()).map_err(|_| AmlError::TooLong(elements.len()))?;
    let mut body = vec![count];
    elements.iter().for_each(|e| body.extend_from_slice(e));
    with_pkg_length(&[PACKAGE_OP], &body)
}

/// `ResourceTemplate() { descriptors }`: a Buffer holding the descriptors and an End Tag.
pub fn resource_template(descriptors: &[Vec<u8>]) -> Result<Vec<u8>, AmlError> {
    let mut data: Vec<u8> = descriptors.concat();
    data.extend_from_slice(&[0x79, 0]); // End Tag, checksum 0 ("treat as valid")
    let mut body = integer(data.len() as u64);
    body.extend_from_slice(&data);
    with_pkg_length(&[BUFFER_OP], &body)
}

/// `IO(Decode16, base, base, align, len)` (small item 0x47).
pub fn io_port(base: u16, align: u8, len: u8) -> Vec<u8> {
    let [b0, b1] = base.to_le_bytes();
    vec![0x47, 1, b0, b1, b0, b1, align, len]
}

/// `IRQNoFlags() {irq}` (small item 0x22: edge, active high, exclusive), ISA IRQ 0..15.
pub fn irq_no_flags(irq: u8) -> Vec<u8> {
    let [m0, m1] = (1u16 << (irq & 0xf)).to_le_bytes();
    vec![0x22, m0, m1]
}

/// `Memory32Fixed(ReadWrite, base, len)` (large item 0x86).
pub fn memory32_fixed(base: u32, len: u32) -> Vec<u8> {
    let mut out = vec![0x86, 9, 0, 1];
    out.extend_from_slice(&base.to_le_bytes());
    out.extend_from_slice(&len.to_le_bytes());
    out
}

/// `Interrupt(ResourceConsumer, Edge, ActiveHigh, Exclusive) {gsi}` (large item 0x89).
pub fn interrupt_edge_high(gsi: u32) -> Vec<u8> {
    // flags: bit 0 consumer, bit 1 edge-triggered; active high and exclusive are 0.
    let mut out = vec![0x89, 6, 0, 0b0000_0011, 1];
    out.extend_from_slice(&gsi.to_le_bytes());
    out
}
