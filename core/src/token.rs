//! The token format (one implementation for `tokenctl new` and the token service): `tg_` + 32 random base62 characters + 6 base62 checksum characters.
//!
//! * 32 characters drawn uniformly from 62 (rejection sampling over OS randomness) carry
//!   32·log2(62) ≈ 190.5 bits.
//! * The checksum is the CRC-32 (IEEE) of the 32 random characters, written as 6 base62
//!   digits (62^6 > 2^32), most significant first. A typo is caught offline, and a secret
//!   scanner can tell a real token from a look-alike without asking anyone.
//! * Every token matches [`SCAN_REGEX`].

/// The prefix every generated token carries (the filter answers 401 for an unknown `tg_`
/// credential instead of handing it on).
pub const PREFIX: &str = "tg_";
pub const RANDOM_LEN: usize = 32;
pub const CHECK_LEN: usize = 6;
/// Total length of a generated token.
pub const TOKEN_LEN: usize = PREFIX.len() + RANDOM_LEN + CHECK_LEN;
/// For secret scanners (PCRE/RE2/Rust `regex` syntax).
pub const SCAN_REGEX: &str = r"\btg_[0-9A-Za-z]{38}\b";

const ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// A fresh token from the operating system's random source.
#[cfg(feature = "generate")]
pub fn generate() -> Result<String, String> {
    let mut out = String::with_capacity(TOKEN_LEN);
    out.push_str(PREFIX);
    let mut random = String::with_capacity(RANDOM_LEN);
    let mut buf = [0u8; 64];
    while random.len() < RANDOM_LEN {
        getrandom::fill(&mut buf).map_err(|e| format!("no OS randomness available: {e}"))?;
        for b in buf {
            // 248 = 4·62: bytes above it would bias the first characters of the alphabet.
            if b < 248 && random.len() < RANDOM_LEN {
                if let Some(&c) = ALPHABET.get(usize::from(b % 62)) {
                    random.push(char::from(c));
                }
            }
        }
    }
    out.push_str(&random);
    out.push_str(&checksum(&random));
    Ok(out)
}

/// The 6-character checksum of a token's random part.
pub fn checksum(random: &str) -> String {
    let mut n = crc32(random.as_bytes());
    let mut digits = [b'0'; CHECK_LEN];
    for slot in digits.iter_mut().rev() {
        *slot = ALPHABET.get((n % 62) as usize).copied().unwrap_or(b'0');
        n /= 62;
    }
    digits.iter().map(|&b| char::from(b)).collect()
}

/// A token id from a free name: lowercase ASCII letters, digits and single `-`, at most 60
/// characters; empty when the name has none of them (the caller picks a fallback).
pub fn id_from_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len().min(60));
    for c in name.chars() {
        let c = if c.is_ascii_alphanumeric() {
            c.to_ascii_lowercase()
        } else {
            '-'
        };
        if c == '-' && (out.is_empty() || out.ends_with('-')) {
            continue;
        }
        if out.len() == 60 {
            break;
        }
        out.push(c);
    }
    while out.ends_with('-') {
        out.pop();
    }
    out
}

/// What a credential looks like, as far as the format tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// A well-formed generated token with a correct checksum.
    Valid,
    /// `tg_` + 38 base62 characters, but the checksum does not match (a typo?).
    BadChecksum,
    /// Starts with `tg_` but is not 38 base62 characters after it.
    Malformed,
    /// No `tg_` prefix: a legacy or admin-chosen token.
    Foreign,
}

pub fn shape(token: &str) -> Shape {
    let Some(rest) = token.strip_prefix(PREFIX) else {
        return Shape::Foreign;
    };
    if rest.len() != RANDOM_LEN + CHECK_LEN || !rest.bytes().all(|c| c.is_ascii_alphanumeric()) {
        return Shape::Malformed;
    }
    match (rest.get(..RANDOM_LEN), rest.get(RANDOM_LEN..)) {
        (Some(random), Some(check)) if checksum(random) == check => Shape::Valid,
        _ => Shape::BadChecksum,
    }
}

/// CRC-32 (IEEE 802.3, reflected, as zlib and GitHub's token checksums use).
pub fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            let mask = (crc & 1).wrapping_neg();
            crc = (crc >> 1) ^ (0xEDB8_8320 & mask);
        }
    }
    !crc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_from_names() {
        assert_eq!(id_from_name("CI bot (Ansible)"), "ci-bot-ansible");
        assert_eq!(id_from_name("--"), "");
        assert_eq!(id_from_name(&"a".repeat(80)).len(), 60);
    }

    #[test]
    fn crc_known_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }

    #[cfg(feature = "generate")]
    #[test]
    fn generated_tokens_are_valid_and_distinct() {
        let a = generate().unwrap();
        let b = generate().unwrap();
        assert_ne!(a, b);
        assert_eq!(a.len(), TOKEN_LEN);
        assert_eq!(shape(&a), Shape::Valid);
        let re = regex_lite_match(&a);
        assert!(re);
    }

    fn regex_lite_match(t: &str) -> bool {
        t.starts_with("tg_") && t.len() == 41 && t[3..].bytes().all(|c| c.is_ascii_alphanumeric())
    }

    #[cfg(feature = "generate")]
    #[test]
    fn typos_are_caught() {
        let t = generate().unwrap();
        let mut bytes = t.clone().into_bytes();
        bytes[10] = if bytes[10] == b'a' { b'b' } else { b'a' };
        let typo = String::from_utf8(bytes).unwrap();
        assert_eq!(shape(&typo), Shape::BadChecksum);
        assert_eq!(shape("tg_short"), Shape::Malformed);
        assert_eq!(shape("password"), Shape::Foreign);
    }
}
