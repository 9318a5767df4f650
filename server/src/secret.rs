//! The service's own secrets: admin API keys, admin passwords and the audit credential.
//! Only digests and Argon2id hashes are stored; plaintext lives in one answer or one stdin
//! read and is never logged.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use tokengate_core::digest;

/// Prefix of admin API keys (so scanners and reviewers can tell them from token secrets).
pub const ADMIN_KEY_PREFIX: &str = "tga_";

const ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// `n` base62 characters from OS randomness (rejection sampling: no bias).
pub fn random_base62(n: usize) -> Result<String, String> {
    let mut out = String::with_capacity(n);
    let mut buf = [0u8; 64];
    while out.len() < n {
        getrandom::fill(&mut buf).map_err(|e| format!("no OS randomness available: {e}"))?;
        for b in buf {
            if b < 248 && out.len() < n {
                if let Some(&c) = ALPHABET.get(usize::from(b % 62)) {
                    out.push(char::from(c));
                }
            }
        }
    }
    Ok(out)
}

/// A new admin API key (≈ 238 bits).
pub fn new_admin_key() -> Result<String, String> {
    Ok(format!("{ADMIN_KEY_PREFIX}{}", random_base62(40)?))
}

pub fn sha256_hex(text: &str) -> String {
    digest::to_hex(&digest::sha256(text.as_bytes()))
}

/// Constant-time comparison of two secrets by their digests.
pub fn same_secret(a: &str, b: &str) -> bool {
    digest::ct_eq(&digest::sha256(a.as_bytes()), &digest::sha256(b.as_bytes()))
}

pub fn hash_password(password: &str) -> Result<String, String> {
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).map_err(|e| format!("no OS randomness available: {e}"))?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| e.to_string())?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}

/// The console's sign-in (SPEC §17).
pub fn verify_password(password: &str, hash: &str) -> bool {
    match PasswordHash::new(hash) {
        Ok(parsed) => Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok(),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_distinct_and_prefixed() {
        let a = new_admin_key().unwrap();
        let b = new_admin_key().unwrap();
        assert_ne!(a, b);
        assert!(a.starts_with("tga_") && a.len() == 44);
    }

    #[test]
    fn passwords_hash_with_argon2id() {
        let h = hash_password("correct horse").unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(!h.contains("correct horse"));
        assert!(verify_password("correct horse", &h));
        assert!(!verify_password("wrong", &h));
        assert!(!verify_password("x", "not a hash"));
    }
}
