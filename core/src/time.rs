//! RFC 3339 timestamps without a date library: config `expires` and audit `ts`.
//!
//! wasm32-unknown-unknown has no clock of its own; times come from the host as Unix
//! milliseconds and are compared as integers.

use crate::text::push_padded;

/// Parses an RFC 3339 date-time (`2027-01-01T00:00:00Z`, `2027-01-01T01:00:00.5+01:00`)
/// into Unix milliseconds.
pub fn parse_rfc3339(text: &str) -> Option<i64> {
    let b = text.as_bytes();
    let num = |from: usize, len: usize| -> Option<i64> {
        let digits = b.get(from..from + len)?;
        let mut v = 0i64;
        for d in digits {
            if !d.is_ascii_digit() {
                return None;
            }
            v = v * 10 + i64::from(d - b'0');
        }
        Some(v)
    };
    let sep = |at: usize, allowed: &[u8]| b.get(at).is_some_and(|c| allowed.contains(c));
    let year = num(0, 4)?;
    let month = num(5, 2)?;
    let day = num(8, 2)?;
    let hour = num(11, 2)?;
    let minute = num(14, 2)?;
    let second = num(17, 2)?;
    if !(sep(4, b"-") && sep(7, b"-") && sep(10, b"Tt ") && sep(13, b":") && sep(16, b":")) {
        return None;
    }
    if !(1..=12).contains(&month)
        || day < 1
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let mut pos = 19;
    let mut millis = 0i64;
    if sep(pos, b".") {
        pos += 1;
        let start = pos;
        let mut scale = 100;
        while let Some(d) = b.get(pos).filter(|d| d.is_ascii_digit()) {
            millis += i64::from(d - b'0') * scale;
            scale /= 10;
            pos += 1;
        }
        if pos == start {
            return None;
        }
    }
    let offset_min = match b.get(pos) {
        Some(b'Z' | b'z') if pos + 1 == b.len() => 0,
        Some(sign @ (b'+' | b'-')) if pos + 6 == b.len() && sep(pos + 3, b":") => {
            let (h, m) = (num(pos + 1, 2)?, num(pos + 4, 2)?);
            if h > 23 || m > 59 {
                return None;
            }
            let off = h * 60 + m;
            if *sign == b'-' {
                -off
            } else {
                off
            }
        }
        _ => return None,
    };
    let days = days_from_civil(year, month, day);
    let secs = days * 86_400 + hour * 3600 + minute * 60 + second.min(59) - offset_min * 60;
    Some(secs * 1000 + millis)
}

/// Formats Unix milliseconds as `YYYY-MM-DDTHH:MM:SS.mmmZ`.
pub fn format_rfc3339_ms(unix_ms: i64) -> String {
    let mut out = String::with_capacity(24);
    push_rfc3339_ms(&mut out, unix_ms);
    out
}

/// Appends Unix milliseconds as `YYYY-MM-DDTHH:MM:SS.mmmZ` (the audit line writes it in
/// place, without a separate allocation).
pub fn push_rfc3339_ms(out: &mut String, unix_ms: i64) {
    let secs = unix_ms.div_euclid(1000);
    let ms = unix_ms.rem_euclid(1000);
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    // Same as `{y:04}-{m:02}-{d:02}T{h:02}:{min:02}:{s:02}.{ms:03}Z` for years 0..=9999, which a
    // host clock stays in; a negative year would lose its sign.
    let field = |out: &mut String, v: i64, width: usize| {
        push_padded(out, u64::try_from(v).unwrap_or(0), width);
    };
    field(out, y, 4);
    out.push('-');
    field(out, m, 2);
    out.push('-');
    field(out, d, 2);
    out.push('T');
    field(out, sod / 3600, 2);
    out.push(':');
    field(out, (sod / 60) % 60, 2);
    out.push(':');
    field(out, sod % 60, 2);
    out.push('.');
    field(out, ms, 3);
    out.push('Z');
}

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        2 if is_leap(y) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

// Howard Hinnant's days-from-civil algorithm (proleptic Gregorian).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (
        if m <= 2 {
            yoe + era * 400 + 1
        } else {
            yoe + era * 400
        },
        m,
        d,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_utc_and_offsets() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            parse_rfc3339("2027-01-01T00:00:00Z"),
            Some(1_798_761_600_000)
        );
        assert_eq!(
            parse_rfc3339("2027-01-01T01:00:00+01:00"),
            Some(1_798_761_600_000)
        );
        assert_eq!(
            parse_rfc3339("2026-12-31T19:00:00.250-05:00"),
            Some(1_798_761_600_250)
        );
        assert_eq!(
            parse_rfc3339("2024-02-29T00:00:00z"),
            Some(1_709_164_800_000)
        );
    }

    #[test]
    fn rejects_malformed() {
        for bad in [
            "",
            "2027-01-01",
            "2027-01-01T00:00:00",
            "2027-13-01T00:00:00Z",
            "2027-02-29T00:00:00Z",
            "2027-01-01T24:00:00Z",
            "2027-01-01T00:00:00+0100",
            "2027-01-01T00:00:00Zjunk",
            "2027-01-01T00:00:00.Z",
            "２027-01-01T00:00:00Z",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
    }

    #[test]
    fn formats_with_millis() {
        assert_eq!(format_rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            format_rfc3339_ms(1_798_761_600_250),
            "2027-01-01T00:00:00.250Z"
        );
        assert_eq!(
            format_rfc3339_ms(1_709_164_800_001),
            "2024-02-29T00:00:00.001Z"
        );
    }
}
