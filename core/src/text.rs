//! Appending JSON strings, numbers and addresses to a `String`, without `core::fmt`.
//!
//! The audit line is written on every decided request. In wasm, `write!` costs a trip through
//! the formatting machinery (trait objects, padding logic) for every number; these write the
//! digits directly. Same output as the `fmt` spelling, which the tests check.

use std::net::IpAddr;

/// Appends `s` as a JSON string literal. Runs of bytes that need no escape are copied whole.
pub fn push_json_string(out: &mut String, s: &str) {
    out.push('"');
    let bytes = s.as_bytes();
    let mut run = 0;
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        // Control characters, the two JSON delimiters, and U+2028/U+2029 (E2 80 A8/A9: line
        // breaks to JavaScript, escaped so a line can be embedded in a script). Every other
        // byte, multi-byte UTF-8 included, is copied as it is.
        let escape: Option<&str> = match b {
            b'"' => Some("\\\""),
            b'\\' => Some("\\\\"),
            b'\n' => Some("\\n"),
            b'\r' => Some("\\r"),
            b'\t' => Some("\\t"),
            0..=0x1f => Some(""),
            0xe2 if bytes.get(i + 1) == Some(&0x80)
                && matches!(bytes.get(i + 2), Some(0xa8 | 0xa9)) =>
            {
                Some("")
            }
            _ => None,
        };
        let Some(escape) = escape else {
            i += 1;
            continue;
        };
        out.push_str(s.get(run..i).unwrap_or_default());
        if escape.is_empty() {
            let (code, width) = if b == 0xe2 {
                (
                    if bytes.get(i + 2) == Some(&0xa8) {
                        0x2028
                    } else {
                        0x2029
                    },
                    3,
                )
            } else {
                (u32::from(b), 1)
            };
            out.push_str("\\u");
            push_hex4(out, code);
            i += width;
        } else {
            out.push_str(escape);
            i += 1;
        }
        run = i;
    }
    out.push_str(s.get(run..).unwrap_or_default());
    out.push('"');
}

fn push_hex4(out: &mut String, v: u32) {
    for shift in [12, 8, 4, 0] {
        let n = (v >> shift) & 0xf;
        out.push(char::from_digit(n, 16).unwrap_or('0'));
    }
}

/// Appends `n` in decimal.
pub fn push_uint(out: &mut String, n: u64) {
    let mut buf = [0u8; 20];
    let mut at = buf.len();
    let mut n = n;
    loop {
        at -= 1;
        if let Some(slot) = buf.get_mut(at) {
            // n % 10 < 10: the cast cannot truncate.
            *slot = b'0' + (n % 10) as u8;
        }
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for &b in buf.get(at..).unwrap_or_default() {
        out.push(char::from(b));
    }
}

/// Appends `n` in decimal, zero-padded to at least `width` digits (`{n:0width$}`).
pub fn push_padded(out: &mut String, n: u64, width: usize) {
    let mut digits = 1;
    let mut m = n / 10;
    while m > 0 {
        digits += 1;
        m /= 10;
    }
    for _ in digits..width {
        out.push('0');
    }
    push_uint(out, n);
}

/// Appends an address as `Display` writes it. IPv4 directly; IPv6 (rarer, with its `::`
/// compression rules) through `fmt`.
pub fn push_ip(out: &mut String, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => {
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push('.');
                }
                push_uint(out, u64::from(octet));
            }
        }
        IpAddr::V6(v6) => {
            use std::fmt::Write as _;
            let _ = write!(out, "{v6}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(s: &str) -> String {
        let mut out = String::new();
        push_json_string(&mut out, s);
        out
    }

    #[test]
    fn json_strings_round_trip_through_serde() {
        for s in [
            "",
            "plain",
            "a\"b\\c",
            "tab\there\nline\r",
            "\u{0}\u{1}\u{1f} ctrl",
            "é ü 漢字 😀",
            "sep\u{2028}\u{2029}end",
            "\"\"\\\\",
            "\u{2027}€\u{2028}x\u{2029}",
            "end\u{1f}",
        ] {
            let out = json(s);
            let back: String = serde_json::from_str(&out).unwrap();
            assert_eq!(back, s, "{out}");
        }
        assert_eq!(json("\u{1}\u{2028}"), "\"\\u0001\\u2028\"");
        assert_eq!(json("a\"b"), "\"a\\\"b\"");
        assert_eq!(
            json("\u{2027}€"),
            "\"\u{2027}€\"",
            "only U+2028/U+2029 are escaped"
        );
    }

    #[test]
    fn numbers_as_fmt_writes_them() {
        for n in [0u64, 1, 9, 10, 99, 100, 12345, 4_294_967_295, u64::MAX] {
            let mut out = String::new();
            push_uint(&mut out, n);
            assert_eq!(out, n.to_string());
            for width in [0, 1, 2, 3, 4, 25] {
                let mut out = String::new();
                push_padded(&mut out, n, width);
                assert_eq!(out, format!("{n:0width$}"));
            }
        }
    }

    #[test]
    fn addresses_as_display_writes_them() {
        for ip in [
            "0.0.0.0",
            "127.0.0.1",
            "255.255.255.255",
            "10.20.3.40",
            "::1",
            "2001:db8::8a2e:370:7334",
            "::ffff:192.0.2.1",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            let mut out = String::new();
            push_ip(&mut out, ip);
            assert_eq!(out, ip.to_string());
        }
    }
}
