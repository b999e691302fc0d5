//! The secrets page the firmware writes for SNP_LAUNCH_UPDATE page type SECRETS
//! (`struct snp_secrets_page`, SNP-FACTS §3.3). The VMM's contents of the page are ignored.

use crate::launch::digest::PAGE_SIZE;

/// VERSION the simulated firmware writes (the layout with the VMSA tweak bitmap at 0x100).
pub const SECRETS_PAGE_VERSION: u32 = 3;
/// Offset of VERSION (u32).
pub const SECRETS_VERSION: usize = 0x000;
/// Offset of the IMI_EN word (bit 0).
pub const SECRETS_IMI_EN: usize = 0x004;
/// Offset of FMS: CPUID Fn0000_0001_EAX of the processor (u32).
pub const SECRETS_FMS: usize = 0x008;
/// Offset of GOSVW, the guest-OS-visible workarounds from LAUNCH_START (16 bytes).
pub const SECRETS_GOSVW: usize = 0x010;
/// Offsets of VMPCK0..VMPCK3 (32 bytes each).
pub const SECRETS_VMPCK: [usize; 4] = [0x020, 0x040, 0x060, 0x080];
/// Size of a VMPCK (an AES-256 key).
pub const VMPCK_SIZE: usize = 32;
/// Offset of the guest OS area (96 bytes: message sequence numbers, AP jump table, ...),
/// zero as the firmware leaves it.
pub const SECRETS_OS_AREA: usize = 0x0A0;

/// The page the firmware writes.
pub(super) fn secrets_page(
    fms: u32,
    gosvw: &[u8; 16],
    vmpcks: &[[u8; VMPCK_SIZE]; 4],
) -> [u8; PAGE_SIZE] {
    let mut page = [0u8; PAGE_SIZE];
    let mut put = |at: usize, bytes: &[u8]| {
        if let Some(dst) = page.get_mut(at..at + bytes.len()) {
            dst.copy_from_slice(bytes);
        }
    };
    put(SECRETS_VERSION, &SECRETS_PAGE_VERSION.to_le_bytes());
    put(SECRETS_IMI_EN, &0u32.to_le_bytes());
    put(SECRETS_FMS, &fms.to_le_bytes());
    put(SECRETS_GOSVW, gosvw);
    for (at, key) in SECRETS_VMPCK.iter().zip(vmpcks) {
        put(*at, key);
    }
    page
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout() {
        let keys = [[1u8; 32], [2u8; 32], [3u8; 32], [4u8; 32]];
        let p = secrets_page(0x00a1_0f11, &[9u8; 16], &keys);
        assert_eq!(&p[0..4], &[3, 0, 0, 0]);
        assert_eq!(&p[8..12], &[0x11, 0x0f, 0xa1, 0x00]);
        assert_eq!(&p[0x10..0x20], &[9u8; 16]);
        for (i, at) in SECRETS_VMPCK.iter().enumerate() {
            assert_eq!(&p[*at..*at + 32], &keys[i]);
        }
        assert!(p[0xA0..].iter().all(|&b| b == 0));
        assert_eq!(SECRETS_VMPCK[3] + VMPCK_SIZE, SECRETS_OS_AREA);
    }
}
