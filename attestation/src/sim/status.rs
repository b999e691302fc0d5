//! Firmware status codes (SEV-SNP firmware ABI, "Status Codes"; Linux
//! `include/uapi/linux/psp-sev.h`, `sev_ret_code`).

/// A firmware status as the AMD secure processor returns it: 0 is success, anything else
/// names why the command was refused. KVM hands it to user space in `kvm_sev_cmd.error`
/// and to a guest in the low 32 bits of SW_EXITINFO2.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FwStatus(pub u32);

impl FwStatus {
    /// 0x00: the command succeeded.
    pub const SUCCESS: FwStatus = FwStatus(0x00);
    /// 0x01: the platform is not in a state that allows the command.
    pub const INVALID_PLATFORM_STATE: FwStatus = FwStatus(0x01);
    /// 0x02: the guest is not in a state that allows the command.
    pub const INVALID_GUEST_STATE: FwStatus = FwStatus(0x02);
    /// 0x04: a length is not valid.
    pub const INVALID_LENGTH: FwStatus = FwStatus(0x04);
    /// 0x07: the guest policy forbids the command, or the platform cannot honour it.
    pub const POLICY_FAILURE: FwStatus = FwStatus(0x07);
    /// 0x09: an address is not valid.
    pub const INVALID_ADDRESS: FwStatus = FwStatus(0x09);
    /// 0x0A: a signature does not verify.
    pub const BAD_SIGNATURE: FwStatus = FwStatus(0x0A);
    /// 0x0B: a measurement does not match (the ID block's LD at LAUNCH_FINISH).
    pub const BAD_MEASUREMENT: FwStatus = FwStatus(0x0B);
    /// 0x10: there is no guest context (no LAUNCH_START yet).
    pub const INVALID_GUEST: FwStatus = FwStatus(0x10);
    /// 0x13: the platform failed (the simulator reports its own internal faults so).
    pub const HWERROR_PLATFORM: FwStatus = FwStatus(0x13);
    /// 0x15: the command or message is not supported.
    pub const UNSUPPORTED: FwStatus = FwStatus(0x15);
    /// 0x16: a parameter is not valid (also the rejected CPUID page).
    pub const INVALID_PARAM: FwStatus = FwStatus(0x16);
    /// 0x17: a resource limit was reached.
    pub const RESOURCE_LIMIT: FwStatus = FwStatus(0x17);
    /// 0x19: a page size is not valid.
    pub const INVALID_PAGE_SIZE: FwStatus = FwStatus(0x19);
    /// 0x1A: a page is not in the state the command needs (for example added twice).
    pub const INVALID_PAGE_STATE: FwStatus = FwStatus(0x1A);
    /// 0x1C: a page is owned by someone else.
    pub const INVALID_PAGE_OWNER: FwStatus = FwStatus(0x1C);
    /// 0x1D: the AEAD message counter would overflow.
    pub const AEAD_OFLOW: FwStatus = FwStatus(0x1D);
    /// 0x27: the requested key is not available (for example a VLEK that is not installed).
    pub const INVALID_KEY: FwStatus = FwStatus(0x27);

    /// The numeric code.
    pub fn code(self) -> u32 {
        self.0
    }

    /// True for [`FwStatus::SUCCESS`].
    pub fn is_success(self) -> bool {
        self == Self::SUCCESS
    }

    /// The ABI's name of the status, or "UNKNOWN".
    pub fn name(self) -> &'static str {
        match self.0 {
            0x00 => "SUCCESS",
            0x01 => "INVALID_PLATFORM_STATE",
            0x02 => "INVALID_GUEST_STATE",
            0x04 => "INVALID_LENGTH",
            0x07 => "POLICY_FAILURE",
            0x09 => "INVALID_ADDRESS",
            0x0A => "BAD_SIGNATURE",
            0x0B => "BAD_MEASUREMENT",
            0x10 => "INVALID_GUEST",
            0x13 => "HWERROR_PLATFORM",
            0x15 => "UNSUPPORTED",
            0x16 => "INVALID_PARAM",
            0x17 => "RESOURCE_LIMIT",
            0x19 => "INVALID_PAGE_SIZE",
            0x1A => "INVALID_PAGE_STATE",
            0x1C => "INVALID_PAGE_OWNER",
            0x1D => "AEAD_OFLOW",
            0x27 => "INVALID_KEY",
            _ => "UNKNOWN",
        }
    }
}

impl std::fmt::Display for FwStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({:#04x})", self.name(), self.0)
    }
}

impl std::error::Error for FwStatus {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_match_linux_psp_sev_h() {
        // Values of `sev_ret_code` in include/uapi/linux/psp-sev.h.
        for (status, code) in [
            (FwStatus::SUCCESS, 0x00),
            (FwStatus::INVALID_PLATFORM_STATE, 0x01),
            (FwStatus::INVALID_GUEST_STATE, 0x02),
            (FwStatus::INVALID_LENGTH, 0x04),
            (FwStatus::POLICY_FAILURE, 0x07),
            (FwStatus::INVALID_ADDRESS, 0x09),
            (FwStatus::BAD_SIGNATURE, 0x0A),
            (FwStatus::BAD_MEASUREMENT, 0x0B),
            (FwStatus::INVALID_GUEST, 0x10),
            (FwStatus::HWERROR_PLATFORM, 0x13),
            (FwStatus::UNSUPPORTED, 0x15),
            (FwStatus::INVALID_PARAM, 0x16),
            (FwStatus::RESOURCE_LIMIT, 0x17),
            (FwStatus::INVALID_PAGE_SIZE, 0x19),
            (FwStatus::INVALID_PAGE_STATE, 0x1A),
            (FwStatus::INVALID_PAGE_OWNER, 0x1C),
            (FwStatus::AEAD_OFLOW, 0x1D),
            (FwStatus::INVALID_KEY, 0x27),
        ] {
            assert_eq!(status.code(), code);
            assert_ne!(status.name(), "UNKNOWN");
        }
        assert_eq!(FwStatus::INVALID_PARAM.to_string(), "INVALID_PARAM (0x16)");
        assert_eq!(FwStatus(0x99).name(), "UNKNOWN");
    }
}
