//! The guest's attestation step: find the CC blob, ask the PSP for a report with VMPCK0
//! by a GHCB (extended) guest request, and print the outcome on lines starting with `CLOISTER-ATTEST: `
//! (and the report on one `CLOISTER-REPORT: ` line) for the tests to capture.

use cloister_test_guest::cc_blob::{self, CcBlob};
use cloister_test_guest::cmdline::{AttestMode, TestParams};

use crate::bootinfo::BootInfo;
use crate::{begin, serial, Identity, Report};

/// Starts a `CLOISTER-ATTEST: ` line.
fn attest_line() {
    serial::write(b"CLOISTER-ATTEST: ");
}

/// Starts a `CLOISTER-ATTEST: failed: ...` line; [`end_failed`] ends it.
fn failed(what: &[u8]) {
    attest_line();
    serial::write(b"failed: ");
    serial::write(what);
}

/// Ends a failure line and records the failed check.
fn end_failed(report: &mut Report) {
    serial::write(b"\n");
    report.fail();
    serial::write(b"attestation (see the CLOISTER-ATTEST line)\n");
}

/// Runs the attestation step for the loader's hand-over `boot`.
pub fn run(boot: &BootInfo, params: &TestParams, report: &mut Report) {
    let blob = match boot.zero_page {
        Some(zero_page) => cc_blob::find(&Identity, zero_page, &boot.e820[..boot.e820_len]),
        None => Ok(None),
    };
    let blob = match blob {
        Ok(Some(blob)) => blob,
        Ok(None) => {
            attest_line();
            serial::write(b"none (no CC blob)\n");
            return;
        }
        Err(error) => {
            let (what, value) = error.describe();
            failed(b"CC blob: ");
            serial::write(what.as_bytes());
            serial::write(b" ");
            serial::write_hex(value);
            end_failed(report);
            return;
        }
    };
    print_blob(&blob);
    if params.attest == AttestMode::Off {
        attest_line();
        serial::write(b"off (cloister_test.attest=off)\n");
        return;
    }
    request(&blob, params, report);
}

fn print_blob(blob: &CcBlob) {
    begin();
    serial::write(b"CC blob at ");
    serial::write_hex(blob.address);
    serial::write(b" version ");
    serial::write_dec(blob.version.into());
    serial::write(b": secrets page ");
    serial::write_hex(blob.secrets_phys);
    serial::write(b" (");
    serial::write_dec(blob.secrets_len.into());
    serial::write(b" bytes), CPUID page ");
    serial::write_hex(blob.cpuid_phys);
    serial::write(b" (");
    serial::write_dec(blob.cpuid_len.into());
    serial::write(b" bytes, ");
    serial::write_dec(blob.cpuid_count.into());
    serial::write(b" entries)\n");
}

#[cfg(not(feature = "attest"))]
fn request(_: &CcBlob, _: &TestParams, _: &mut Report) {
    attest_line();
    serial::write(b"off (built without the attest feature)\n");
}

#[cfg(feature = "attest")]
use protocol::request;

#[cfg(feature = "attest")]
mod protocol {
    use core::cell::UnsafeCell;
    use core::sync::atomic::{AtomicBool, Ordering};

    use cloister_test_guest::attest::{
        read_vmpck, AttestError, MessagePages, Session, Tamper, TransportError,
    };
    use cloister_test_guest::cc_blob::CcBlob;
    use cloister_test_guest::cmdline::{AttestMode, TestParams, REPORT_DATA_LEN};

    use super::{attest_line, end_failed, failed};
    use crate::ghcb_io::{CertOutcome, GhcbTransport};
    use crate::{serial, Identity, Report};
    use cloister_test_guest::cmdline::DEFAULT_CERT_PAGES;
    use cloister_test_guest::ghcb::guid;

    struct Pages(UnsafeCell<MessagePages>);
    // SAFETY: handed out once, by `message_pages`, as the only reference.
    unsafe impl Sync for Pages {}

    /// The private pages messages are sealed and opened in (8 KiB: not on the stack).
    /// In `.bss.lazy` (guest.ld, not zeroed at entry): `message_pages` zeroes it.
    #[link_section = ".bss.lazy"]
    static PAGES: Pages = Pages(UnsafeCell::new(MessagePages::new()));
    static PAGES_TAKEN: AtomicBool = AtomicBool::new(false);

    fn message_pages() -> Option<&'static mut MessagePages> {
        if PAGES_TAKEN.swap(true, Ordering::AcqRel) {
            return None;
        }
        // SAFETY: the flag lets this run once, so this is the only reference ever made;
        // zeroing first gives the all-zero `MessagePages::new()` the static declares.
        Some(unsafe {
            core::ptr::write_bytes(PAGES.0.get(), 0, 1);
            &mut *PAGES.0.get()
        })
    }

    /// Asks for the report as `params.attest` says, and prints the outcome.
    pub fn request(blob: &CcBlob, params: &TestParams, report: &mut Report) {
        let Some(pages) = message_pages() else {
            failed(b"attestation ran twice");
            end_failed(report);
            return;
        };
        let Some(vmpck0) = read_vmpck(&Identity, blob.secrets_phys, 0) else {
            failed(b"cannot read VMPCK0 from the secrets page");
            end_failed(report);
            return;
        };
        if vmpck0.is_empty() {
            failed(b"VMPCK0 in the secrets page is all zero (no key)");
            end_failed(report);
            return;
        }
        let report_data = params.report_data.unwrap_or([0; REPORT_DATA_LEN]);
        let mut session = Session::new(vmpck0, 0);
        let mut doorbell = GhcbTransport::new(params.cert_pages.unwrap_or(DEFAULT_CERT_PAGES));
        let (mode, outcome): (&[u8], _) = match params.attest {
            AttestMode::Report | AttestMode::Off => {
                if ok_or_print(
                    session.request_report(&mut doorbell, &report_data, pages),
                    &session,
                    report,
                ) {
                    print_certs(&doorbell.certs, report);
                }
                return;
            }
            AttestMode::Replay => {
                if !ok_or_print(
                    session.request_report(&mut doorbell, &report_data, pages),
                    &session,
                    report,
                ) {
                    return;
                }
                (b"replay", session.replay_last(&mut doorbell, pages))
            }
            AttestMode::Forge => (
                b"forge",
                session.send_tampered(&mut doorbell, &report_data, Tamper::FlipCiphertext, pages),
            ),
            AttestMode::WrongKey => {
                let Some(vmpck1) = read_vmpck(&Identity, blob.secrets_phys, 1) else {
                    failed(b"cannot read VMPCK1 from the secrets page");
                    end_failed(report);
                    return;
                };
                let outcome = session.send_tampered(
                    &mut doorbell,
                    &report_data,
                    Tamper::WrongKey(&vmpck1),
                    pages,
                );
                (b"wrongkey", outcome)
            }
        };
        // A negative test is over after one message either way.
        session.wipe();
        match outcome {
            Ok(()) => {
                attest_line();
                serial::write(mode);
                serial::write(b" ACCEPTED\n");
                report.fail();
                serial::write(b"the PSP accepted a ");
                serial::write(mode);
                serial::write(b" message it must refuse\n");
            }
            Err(error) => match error.refusal() {
                Some(status) => {
                    attest_line();
                    serial::write(mode);
                    serial::write(b" refused status=");
                    serial::write_hex(status.into());
                    serial::write(b"\n");
                }
                None => print_error(&error, &session, report),
            },
        }
    }

    /// Prints the report and `ok`, or what went wrong; true if a report came back.
    fn ok_or_print(
        result: Result<&[u8; cloister_test_guest::attest::REPORT_SIZE], AttestError>,
        session: &Session,
        report: &mut Report,
    ) -> bool {
        match result {
            Ok(attestation_report) => {
                serial::write(b"CLOISTER-REPORT: ");
                serial::write_hex_bytes(attestation_report);
                serial::write(b"\n");
                attest_line();
                serial::write(b"ok\n");
                true
            }
            Err(error) => {
                match error.refusal() {
                    Some(status) => {
                        attest_line();
                        serial::write(b"refused status=");
                        serial::write_hex(status.into());
                        serial::write(b"\n");
                        report.fail();
                        serial::write(b"attestation: the PSP refused the report request\n");
                    }
                    None => print_error(&error, session, report),
                }
                false
            }
        }
    }

    /// Prints what the certificate buffer brought, on a `CLOISTER-CERTS: ` line.
    fn print_certs(certs: &CertOutcome, report: &mut Report) {
        serial::write(b"CLOISTER-CERTS: ");
        match certs {
            CertOutcome::NotAsked => serial::write(b"not asked (cloister_test.cert_pages=0)\n"),
            CertOutcome::Table { entries, count } => {
                serial::write_dec(*count as u64);
                serial::write(b" in the table");
                for entry in entries.iter().take(*count) {
                    serial::write(b" ");
                    serial::write(guid::name(&entry.guid).unwrap_or("unknown-guid").as_bytes());
                    serial::write(b"=");
                    serial::write_dec(entry.length.into());
                }
                serial::write(b"\n");
            }
            CertOutcome::TooSmall { needed } => {
                serial::write(b"buffer too small: the host needs ");
                serial::write_dec(*needed);
                serial::write(b" pages; the report was asked for again without it\n");
            }
            CertOutcome::Malformed(error) => {
                serial::write(b"malformed table: ");
                match error {
                    cloister_test_guest::ghcb::CertTableError::Unterminated => {
                        serial::write(b"no terminating entry")
                    }
                    cloister_test_guest::ghcb::CertTableError::OutOfBounds { index } => {
                        serial::write(b"entry ");
                        serial::write_dec(*index as u64);
                        serial::write(b" points outside the buffer");
                    }
                }
                serial::write(b"\n");
                report.fail();
                serial::write(b"the host's certificate table is malformed\n");
            }
        }
    }

    /// Prints a failure that is not a refusal.
    fn print_error(error: &AttestError, session: &Session, report: &mut Report) {
        failed(b"");
        match *error {
            AttestError::Transport(TransportError::Unavailable) => {
                serial::write(b"unavailable: the VMM serves no guest requests")
            }
            AttestError::Transport(TransportError::Hypervisor { info1, info2 }) => {
                serial::write(b"the hypervisor rejected the guest request: SW_EXITINFO1=");
                serial::write_hex(info1);
                serial::write(b" SW_EXITINFO2=");
                serial::write_hex(info2);
            }
            AttestError::Transport(TransportError::Refused { status })
            | AttestError::ReportStatus { status } => {
                serial::write(b"refused status=");
                serial::write_hex(status.into());
            }
            AttestError::Message(message) => {
                let (what, values) = message.describe();
                serial::write(what.as_bytes());
                if let Some((expected, found)) = values {
                    serial::write(b": expected ");
                    serial::write_hex(expected);
                    serial::write(b", found ");
                    serial::write_hex(found);
                }
            }
            AttestError::ReportSize { found } => {
                serial::write(b"MSG_REPORT_RSP REPORT_SIZE is not 1184 but ");
                serial::write_dec(found.into());
            }
            AttestError::ResponseTooShort { len } => {
                serial::write(b"MSG_REPORT_RSP too short: ");
                serial::write_dec(len as u64);
                serial::write(b" bytes");
            }
            AttestError::SeqNoExhausted => {
                serial::write(b"message sequence number would leave 32 bits")
            }
            AttestError::KeyWiped => serial::write(b"the VMPCK0 copy was wiped earlier"),
            AttestError::NothingToReplay => serial::write(b"no earlier request to replay"),
        }
        if session.is_wiped() {
            serial::write(b" (VMPCK0 copy wiped)");
        }
        end_failed(report);
    }
}
