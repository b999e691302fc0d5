//! ID blocks for SNP_LAUNCH_FINISH (`cloister_attestation::id_block`): the ID and author
//! key PEM parser, the 96-byte ID block and the 4096-byte ID authentication structure,
//! signing and signature checks.
//!
//! Input: `[mode][...]`. Mode 0: `[launch digest: 48][policy: u64][flip: u16][PEM]`: the
//! PEM is parsed as a private key, and a key that parses signs an ID block (with itself as
//! author key too when `flip` is odd). Mode 1: `[ID block: 96][ID auth: 4096]` as
//! SNP_LAUNCH_FINISH takes them. Seeds: P-384 keys as `openssl` writes them (PKCS#8, SEC1
//! with its EC PARAMETERS block), keys the parser must refuse (P-256, RSA, encrypted, a
//! certificate), and ID blocks signed with and without an author key.
//!
//! Asserted: a key that parses signs an ID block whose signature verifies, whose
//! authentication structure round-trips, carries the key's digest and has an author key
//! exactly when one was given; changing any one bit of the signed block breaks the
//! signature. For any raw pair: the ID block round-trips byte for byte (every byte is a
//! field); the authentication structure gives back its fields with the reserved bytes
//! zero, and parses again to itself; checking the signatures never panics.
#![no_main]

use cloister_attestation::id_block::{
    public_key_digest, sign, signing_key_from_pem, IdAuth, IdBlock, ID_AUTH_SIZE, ID_BLOCK_SIZE,
};
use cloister_fuzz::input::{Reader, Writer};
use cloister_fuzz::Seeds;
use libfuzzer_sys::fuzz_target;

/// The byte ranges of the ID authentication structure's fields; the rest is reserved.
const AUTH_FIELDS: [(usize, usize); 6] = [
    (0x000, 0x004),
    (0x004, 0x008),
    (0x040, 0x240),
    (0x240, 0x644),
    (0x680, 0x880),
    (0x880, 0xC84),
];

fn check_pem(ld: [u8; 48], policy: u64, flip: u16, pem: &[u8]) {
    let Ok(key) = signing_key_from_pem(pem) else {
        return;
    };
    let block = IdBlock::new(ld, policy);
    let with_author = flip & 1 != 0;
    let signed = sign(&block, &key, with_author.then_some(&key));
    assert_eq!(signed.author_key_enabled, with_author);
    assert_eq!(&signed.id_block[..], &block.to_bytes()[..]);
    let auth = IdAuth::from_bytes(&signed.id_auth);
    assert!(
        auth.id_block_signature_valid(&signed.id_block),
        "a fresh signature verifies"
    );
    assert_eq!(auth.id_key_digest(), public_key_digest(key.verifying_key()));
    assert_eq!(auth.has_author_key(), with_author);
    assert_eq!(auth.id_key_signature_valid(), with_author);
    assert_eq!(
        &auth.to_bytes()[..],
        &signed.id_auth[..],
        "the structure round-trips"
    );
    let mut tampered = *signed.id_block;
    let bit = usize::from(flip >> 1) % (ID_BLOCK_SIZE * 8);
    tampered[bit / 8] ^= 1 << (bit % 8);
    assert!(
        !auth.id_block_signature_valid(&tampered),
        "a changed ID block still verifies"
    );
}

fn check_raw(block: &[u8; ID_BLOCK_SIZE], auth_bytes: &[u8; ID_AUTH_SIZE]) {
    let parsed = IdBlock::from_bytes(block);
    assert_eq!(
        &parsed.to_bytes(),
        block,
        "every byte of an ID block is a field"
    );
    let auth = IdAuth::from_bytes(auth_bytes);
    let back = auth.to_bytes();
    for (i, (b, a)) in back.iter().zip(auth_bytes.iter()).enumerate() {
        let field = AUTH_FIELDS.iter().any(|&(s, e)| (s..e).contains(&i));
        assert_eq!(
            *b,
            if field { *a } else { 0 },
            "byte {i:#x} of the ID auth structure"
        );
    }
    assert_eq!(IdAuth::from_bytes(&back), auth);
    let _ = auth.id_block_signature_valid(block);
    let _ = auth.id_key_signature_valid();
    let _ = (
        auth.id_key_digest(),
        auth.author_key_digest(),
        auth.has_author_key(),
    );
}

fuzz_target!(init: cloister_fuzz::init(seeds, cloister_fuzz::no_warm_up), |data: &[u8]| {
    let mut r = Reader::new(data);
    if r.u8().is_multiple_of(2) {
        let ld: [u8; 48] = r.array();
        let policy = r.u64();
        let flip = r.u16();
        check_pem(ld, policy, flip, r.rest());
    } else {
        let block: [u8; ID_BLOCK_SIZE] = r.array();
        let auth: [u8; ID_AUTH_SIZE] = r.array();
        check_raw(&block, &auth);
    }
});

fn seeds(out: &mut Seeds) {
    let dir = cloister_fuzz::scratch_dir("id-block-seeds");
    if std::fs::create_dir_all(&dir).is_err() {
        return;
    }
    let openssl = |args: &[&str]| -> Option<Vec<u8>> {
        let out = std::process::Command::new("openssl")
            .args(args)
            .current_dir(&dir)
            .output()
            .ok()?;
        out.status.success().then_some(out.stdout)
    };
    let p = |name: &str| dir.join(name).display().to_string();
    let mut keys: Vec<(&str, Vec<u8>)> = Vec::new();
    let made = [
        (
            "pkcs8-p384",
            vec![
                "genpkey",
                "-algorithm",
                "EC",
                "-pkeyopt",
                "ec_paramgen_curve:P-384",
                "-out",
            ],
        ),
        (
            "pkcs8-p256",
            vec![
                "genpkey",
                "-algorithm",
                "EC",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-out",
            ],
        ),
        (
            "rsa-2048",
            vec![
                "genpkey",
                "-algorithm",
                "RSA",
                "-pkeyopt",
                "rsa_keygen_bits:2048",
                "-out",
            ],
        ),
        (
            "sec1-p384",
            vec!["ecparam", "-name", "secp384r1", "-genkey", "-out"],
        ),
    ];
    for (name, mut args) in made {
        let path = p(name);
        args.push(&path);
        if openssl(&args).is_some() {
            if let Ok(bytes) = std::fs::read(&path) {
                keys.push((name, bytes));
            }
        }
    }
    let p384 = p("pkcs8-p384");
    if let Some(enc) = openssl(&[
        "pkcs8",
        "-topk8",
        "-in",
        &p384,
        "-passout",
        "pass:x",
        "-v2",
        "aes-256-cbc",
    ]) {
        keys.push(("encrypted-p384", enc));
    }
    if let Some(public) = openssl(&["pkey", "-in", &p384, "-pubout"]) {
        keys.push(("public-p384", public));
    }
    if let Ok(snakeoil) = std::fs::read("/usr/share/ovmf/PkKek-1-snakeoil.key") {
        keys.push(("debian-ovmf-snakeoil-rsa", snakeoil));
    }
    let _ = std::fs::remove_dir_all(&dir);
    if keys.is_empty() {
        eprintln!("seeds: the openssl CLI made no keys");
    }
    let ld = [0x5a; 48];
    for (name, pem) in &keys {
        for flip in [0u16, 1] {
            let mut w = Writer::new();
            w.u8(0).bytes(&ld).u64(0x3_0000).u16(flip | 0x40).bytes(pem);
            out.add(&format!("pem-{name}-author{flip}"), &w.finish());
        }
        // The signed pair, raw.
        if let Ok(key) = signing_key_from_pem(pem) {
            for author in [false, true] {
                let signed = sign(&IdBlock::new(ld, 0x3_0000), &key, author.then_some(&key));
                let mut w = Writer::new();
                w.u8(1)
                    .bytes(&signed.id_block[..])
                    .bytes(&signed.id_auth[..]);
                out.add(
                    &format!("signed-{name}-author{}", u8::from(author)),
                    &w.finish(),
                );
            }
        }
    }
}
