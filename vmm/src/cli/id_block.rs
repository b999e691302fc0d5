//! `cloister id-block`: sign an ID block for a launch, for `cloister run --id-block`.
//!
//! The launch digest is the one `cloister measure --layout cloister` predicts from the
//! same inputs (the same code computes it), or one given with `--measurement`. The guest
//! policy in the block is the one `run` would use: derived from `--policy` as `run
//! --policy` derives it, the default otherwise, or `--guest-policy` with `--measurement`.
//! Writes `id_block.bin` and `id_auth.bin` into `--out-dir`; prints on stdout the policy
//! lines that trust the key(s) (`trusted_id_key_digests`, `trusted_author_key_digests`),
//! and on stderr what was signed and how to launch it.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use cloister_attestation::id_block::{
    public_key_digest, read_signing_key, sign, IdBlock, KeyError, SigningKey, ID_AUTH_SIZE,
    ID_BLOCK_SIZE, ID_BLOCK_VERSION,
};
use cloister_attestation::launch::plan::DEFAULT_GUEST_POLICY;
use cloister_attestation::launch::LD_SIZE;

use super::measure::{measure_cloister, parse_auto_int, CloisterArgs, GuestArgs, MeasureError};

/// Name of the ID block file in `--out-dir`.
pub const ID_BLOCK_FILE: &str = "id_block.bin";
/// Name of the ID authentication structure file in `--out-dir`.
pub const ID_AUTH_FILE: &str = "id_auth.bin";

/// The help heading of the launch's inputs.
const LAUNCH_HEADING: &str = "The launch (as `measure --layout cloister`)";

/// Arguments of `cloister id-block`.
#[derive(Debug, clap::Args)]
pub struct IdBlockArgs {
    /// The ID key that signs the ID block: an ECDSA P-384 private key, PEM (PKCS#8 or
    /// SEC1). Reports name it by ID_KEY_DIGEST.
    #[arg(long, value_name = "PEM")]
    pub id_key: PathBuf,
    /// An author key that signs the ID key (ECDSA P-384, PEM); launch with `run
    /// --id-author-key` so that reports carry AUTHOR_KEY_DIGEST.
    #[arg(long, value_name = "PEM")]
    pub author_key: Option<PathBuf>,
    /// FAMILY_ID: up to 16 bytes of hex, zero-padded on the right (default zero).
    #[arg(long, value_name = "HEX")]
    pub family_id: Option<String>,
    /// IMAGE_ID: up to 16 bytes of hex, zero-padded on the right (default zero).
    #[arg(long, value_name = "HEX")]
    pub image_id: Option<String>,
    /// VERSION of the ID block format (the ABI defines only 1; firmware refuses others).
    #[arg(long, value_name = "N", default_value_t = ID_BLOCK_VERSION)]
    pub version: u32,
    /// GUEST_SVN, reported in the guest's attestation reports.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub svn: u32,
    /// Directory to write id_block.bin and id_auth.bin into (created when missing).
    #[arg(long, value_name = "DIR")]
    pub out_dir: PathBuf,
    /// The guest, as `cloister measure --layout cloister` takes it.
    #[command(flatten, next_help_heading = LAUNCH_HEADING)]
    pub guest: GuestArgs,
    /// The rest of the launch.
    #[command(flatten)]
    pub cloister: CloisterArgs,
    /// The launch measurement to sign (96 hex digits), instead of computing it from the
    /// launch inputs.
    #[arg(
        long,
        value_name = "HEX",
        conflicts_with_all = ["vcpus", "kernel", "initrd", "append", "platform", "memory", "policy", "disks", "virtio"],
        help_heading = LAUNCH_HEADING
    )]
    pub measurement: Option<String>,
    /// With --measurement: the guest policy of the launch (decimal or 0x-hex; default
    /// 0x30000, what `run` uses without --policy).
    #[arg(
        long,
        value_name = "VALUE",
        requires = "measurement",
        value_parser = parse_auto_int,
        help_heading = LAUNCH_HEADING
    )]
    pub guest_policy: Option<u64>,
}

/// Why no ID block was written.
#[derive(Debug, thiserror::Error)]
pub enum IdBlockError {
    /// The launch could not be measured.
    #[error(transparent)]
    Measure(#[from] MeasureError),
    /// A hex argument that does not parse or is too long.
    #[error("{flag} must be {what} of hex, got {value:?}")]
    Hex {
        /// The flag.
        flag: &'static str,
        /// What it must be.
        what: &'static str,
        /// What was given.
        value: String,
    },
    /// A key file that cannot be read or is not an ECDSA P-384 private key.
    #[error("{flag} {}: {source}", path.display())]
    Key {
        /// The flag.
        flag: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        source: KeyError,
    },
    /// An output that cannot be written.
    #[error("cannot write {}: {source}", path.display())]
    Write {
        /// The file or directory.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
}

/// What was signed and written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedIdBlock {
    /// The ID block's fields.
    pub block: IdBlock,
    /// Where the two files are.
    pub id_block_path: PathBuf,
    /// The ID authentication structure's file.
    pub id_auth_path: PathBuf,
    /// ID_KEY_DIGEST of the reports of a guest launched with it.
    pub id_key_digest: [u8; LD_SIZE],
    /// AUTHOR_KEY_DIGEST, with an author key.
    pub author_key_digest: Option<[u8; LD_SIZE]>,
    /// The platform the measurement was computed for (`None` with --measurement).
    pub platform: Option<&'static str>,
}

/// Runs `cloister id-block`.
pub fn main(args: IdBlockArgs) -> ExitCode {
    let signed = match run(&args) {
        Ok(signed) => signed,
        Err(e) => {
            eprintln!("cloister id-block: {e}");
            return ExitCode::FAILURE;
        }
    };
    eprint!("{}", summary(&signed));
    match super::output::print_stdout("id-block", &policy_lines(&signed)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(status) => status,
    }
}

/// Signs the ID block `args` describe and writes the two files.
pub fn run(args: &IdBlockArgs) -> Result<SignedIdBlock, IdBlockError> {
    let family_id = parse_id("--family-id", args.family_id.as_deref())?;
    let image_id = parse_id("--image-id", args.image_id.as_deref())?;
    // The keys first: a bad key fails before the (possibly long) measurement.
    let id_key = read_key("--id-key", &args.id_key)?;
    let author_key = match &args.author_key {
        Some(path) => Some(read_key("--author-key", path)?),
        None => None,
    };
    let (ld, policy, platform) = match &args.measurement {
        Some(hex) => (
            parse_measurement(hex)?,
            args.guest_policy.unwrap_or(DEFAULT_GUEST_POLICY),
            None,
        ),
        None => {
            let launch = measure_cloister(&args.guest, &args.cloister)?;
            (
                launch.measurement,
                launch.guest_policy,
                Some(launch.platform.name()),
            )
        }
    };
    let block = IdBlock {
        ld,
        family_id,
        image_id,
        version: args.version,
        guest_svn: args.svn,
        policy,
    };
    let signed = sign(&block, &id_key, author_key.as_ref());
    std::fs::create_dir_all(&args.out_dir).map_err(|source| IdBlockError::Write {
        path: args.out_dir.clone(),
        source,
    })?;
    let id_block_path = args.out_dir.join(ID_BLOCK_FILE);
    let id_auth_path = args.out_dir.join(ID_AUTH_FILE);
    write(&id_block_path, &signed.id_block[..])?;
    write(&id_auth_path, &signed.id_auth[..])?;
    Ok(SignedIdBlock {
        block,
        id_block_path,
        id_auth_path,
        id_key_digest: public_key_digest(id_key.verifying_key()),
        author_key_digest: author_key
            .as_ref()
            .map(|k| public_key_digest(k.verifying_key())),
        platform,
    })
}

fn write(path: &Path, bytes: &[u8]) -> Result<(), IdBlockError> {
    std::fs::write(path, bytes).map_err(|source| IdBlockError::Write {
        path: path.to_path_buf(),
        source,
    })
}

fn read_key(flag: &'static str, path: &Path) -> Result<SigningKey, IdBlockError> {
    read_signing_key(path).map_err(|source| IdBlockError::Key {
        flag,
        path: path.to_path_buf(),
        source,
    })
}

/// FAMILY_ID or IMAGE_ID: up to 16 bytes of hex, zero-padded on the right.
fn parse_id(flag: &'static str, text: Option<&str>) -> Result<[u8; 16], IdBlockError> {
    let mut out = [0u8; 16];
    let Some(text) = text else {
        return Ok(out);
    };
    let bytes = hex::decode(text.trim())
        .ok()
        .filter(|b| b.len() <= out.len())
        .ok_or_else(|| IdBlockError::Hex {
            flag,
            what: "at most 16 bytes (32 digits)",
            value: text.to_string(),
        })?;
    out[..bytes.len()].copy_from_slice(&bytes);
    Ok(out)
}

fn parse_measurement(text: &str) -> Result<[u8; LD_SIZE], IdBlockError> {
    hex::decode(text.trim())
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| IdBlockError::Hex {
            flag: "--measurement",
            what: "48 bytes (96 digits)",
            value: text.to_string(),
        })
}

/// What was signed and how to launch it (stderr).
fn summary(signed: &SignedIdBlock) -> String {
    let b = &signed.block;
    let platform = signed
        .platform
        .map_or(String::new(), |p| format!(" (platform {p})"));
    let author_flag = if signed.author_key_digest.is_some() {
        " --id-author-key"
    } else {
        ""
    };
    let platform_flag = signed
        .platform
        .map_or(String::new(), |p| format!(" --platform {p}"));
    format!(
        "cloister id-block: wrote {} ({ID_BLOCK_SIZE} bytes) and {} ({ID_AUTH_SIZE} bytes)\n\
         cloister id-block: LD {}{platform}, POLICY {:#x}, FAMILY_ID {}, IMAGE_ID {}, VERSION {}, GUEST_SVN {}\n\
         cloister id-block: launch it with the same inputs (run --cpus, --cmdline, --kernel, --initrd, --memory, --disk, --virtio, --policy):\n\
         cloister id-block:   cloister run{platform_flag} ... --id-block {} --id-auth {}{author_flag}\n",
        signed.id_block_path.display(),
        signed.id_auth_path.display(),
        hex::encode(b.ld),
        b.policy,
        hex::encode(b.family_id),
        hex::encode(b.image_id),
        b.version,
        b.guest_svn,
        signed.id_block_path.display(),
        signed.id_auth_path.display(),
    )
}

/// The tenant-policy lines that trust this ID block's key(s) (stdout).
fn policy_lines(signed: &SignedIdBlock) -> String {
    let mut out = format!(
        "# tenant policy lines for the ID block in {} (cloister id-block)\n\
         require_id_block = true\n\
         trusted_id_key_digests = [\"{}\"]\n",
        signed
            .id_block_path
            .parent()
            .unwrap_or(Path::new("."))
            .display(),
        hex::encode(signed.id_key_digest)
    );
    if let Some(author) = signed.author_key_digest {
        out.push_str(&format!(
            "require_author_key = true\ntrusted_author_key_digests = [\"{}\"]\n",
            hex::encode(author)
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn ids_and_measurements_parse_or_name_the_flag() {
        assert_eq!(parse_id("--family-id", None).unwrap(), [0; 16]);
        let mut expected = [0u8; 16];
        expected[..2].copy_from_slice(&[0xab, 0xcd]);
        assert_eq!(parse_id("--family-id", Some("abcd")).unwrap(), expected);
        assert_eq!(
            parse_id("--image-id", Some(&"11".repeat(16))).unwrap(),
            [0x11; 16]
        );
        for bad in ["abc", "zz", &"11".repeat(17)] {
            let e = parse_id("--image-id", Some(bad)).unwrap_err().to_string();
            assert!(e.contains("--image-id") && e.contains("16 bytes"), "{e}");
        }
        assert_eq!(parse_measurement(&"0a".repeat(48)).unwrap(), [0x0a; 48]);
        let e = parse_measurement(&"0a".repeat(47)).unwrap_err().to_string();
        assert!(
            e.contains("--measurement") && e.contains("96 digits"),
            "{e}"
        );
    }

    #[test]
    fn the_policy_lines_name_the_digests_in_the_policy_file_fields() {
        let mut signed = SignedIdBlock {
            block: IdBlock::new([0; 48], DEFAULT_GUEST_POLICY),
            id_block_path: PathBuf::from("out/id_block.bin"),
            id_auth_path: PathBuf::from("out/id_auth.bin"),
            id_key_digest: [0x11; 48],
            author_key_digest: None,
            platform: Some("sim"),
        };
        let lines = policy_lines(&signed);
        assert!(lines.contains(&format!(
            "trusted_id_key_digests = [\"{}\"]",
            "11".repeat(48)
        )));
        assert!(lines.contains("require_id_block = true"));
        assert!(!lines.contains("author"));
        assert!(!summary(&signed).contains("--id-author-key"));
        signed.author_key_digest = Some([0x22; 48]);
        let lines = policy_lines(&signed);
        assert!(lines.contains(&format!(
            "trusted_author_key_digests = [\"{}\"]",
            "22".repeat(48)
        )));
        assert!(summary(&signed).contains("--id-author-key"));
        // The lines are a valid policy.
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("p.toml");
        std::fs::write(&file, lines).unwrap();
        let policy = cloister_policy::Policy::from_file(&file).unwrap();
        assert!(policy.require_id_block && policy.require_author_key);
        assert_eq!(policy.trusted_id_key_digests[0].0, [0x11; 48]);
    }
}
