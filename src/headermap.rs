//! Envoy's serialized header map (proxy-wasm ABI `proxy_get_header_map_pairs`), read in place.
//!
//! Layout: a little-endian `u32` count `n`, then `n` pairs of `u32` sizes (name, value), then
//! each name and value followed by a NUL byte. The SDK copies every name into a `String` and
//! every value into a `Vec` (two allocations per header, and a panic on a non-UTF-8 name);
//! here the host's buffer is checked once and then looked into, so a protected request reads
//! its dozen headers with no allocation beyond the buffer the host filled.

/// A checked header block. Lookups compare names byte for byte (Envoy hands names lowercased).
#[derive(Debug, Clone)]
pub struct HeaderBlock {
    buf: Vec<u8>,
    count: usize,
}

fn u32_at(buf: &[u8], at: usize) -> Option<usize> {
    let b: [u8; 4] = buf.get(at..at.checked_add(4)?)?.try_into().ok()?;
    usize::try_from(u32::from_le_bytes(b)).ok()
}

impl HeaderBlock {
    /// Checks the layout of a host buffer; `None` if any size points outside it or a
    /// terminating NUL is missing. An empty buffer is an empty map (the host sends nothing for
    /// no headers).
    pub fn parse(buf: Vec<u8>) -> Option<HeaderBlock> {
        if buf.is_empty() {
            return Some(HeaderBlock { buf, count: 0 });
        }
        let count = u32_at(&buf, 0)?;
        let mut data = count.checked_mul(8)?.checked_add(4)?;
        for i in 0..count {
            for field in 0..2 {
                let len = u32_at(&buf, 4 + i * 8 + field * 4)?;
                let end = data.checked_add(len)?;
                if *buf.get(end)? != 0 {
                    return None;
                }
                data = end + 1;
            }
        }
        (data == buf.len()).then_some(HeaderBlock { buf, count })
    }

    /// The pairs in the host's order.
    pub fn iter(&self) -> Pairs<'_> {
        Pairs {
            buf: &self.buf,
            index: 0,
            count: self.count,
            data: 4 + self.count * 8,
        }
    }

    /// The first value of `name`.
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.iter()
            .find(|(n, _)| *n == name.as_bytes())
            .map(|(_, v)| v)
    }

    /// How many entries `name` has.
    pub fn count(&self, name: &str) -> usize {
        self.iter().filter(|(n, _)| *n == name.as_bytes()).count()
    }

    pub fn has(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }
}

/// Serializes pairs in the same layout (local replies and calls hand headers to the host so).
pub fn serialize(pairs: &[(&str, &str)]) -> Vec<u8> {
    let len = |n: usize| u32::try_from(n).unwrap_or(u32::MAX).to_le_bytes();
    let size = 4 + pairs
        .iter()
        .map(|(n, v)| 8 + n.len() + v.len() + 2)
        .sum::<usize>();
    let mut out = Vec::with_capacity(size);
    out.extend_from_slice(&len(pairs.len()));
    for (n, v) in pairs {
        out.extend_from_slice(&len(n.len()));
        out.extend_from_slice(&len(v.len()));
    }
    for (n, v) in pairs {
        out.extend_from_slice(n.as_bytes());
        out.push(0);
        out.extend_from_slice(v.as_bytes());
        out.push(0);
    }
    out
}

/// Iterator over `(name, value)` of a [`HeaderBlock`].
pub struct Pairs<'a> {
    buf: &'a [u8],
    index: usize,
    count: usize,
    data: usize,
}

impl<'a> Iterator for Pairs<'a> {
    type Item = (&'a [u8], &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        if self.index >= self.count {
            return None;
        }
        // Checked in `parse`; a `None` here only ends the iteration early.
        let name_len = u32_at(self.buf, 4 + self.index * 8)?;
        let value_len = u32_at(self.buf, 8 + self.index * 8)?;
        let name = self.buf.get(self.data..self.data + name_len)?;
        let value_at = self.data + name_len + 1;
        let value = self.buf.get(value_at..value_at + value_len)?;
        self.data = value_at + value_len + 1;
        self.index += 1;
        Some((name, value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The host's serialization (as Envoy and the SDK's own serializer write it).
    fn host_layout(pairs: &[(&[u8], &[u8])]) -> Vec<u8> {
        let mut out = (pairs.len() as u32).to_le_bytes().to_vec();
        for (n, v) in pairs {
            out.extend_from_slice(&(n.len() as u32).to_le_bytes());
            out.extend_from_slice(&(v.len() as u32).to_le_bytes());
        }
        for (n, v) in pairs {
            out.extend_from_slice(n);
            out.push(0);
            out.extend_from_slice(v);
            out.push(0);
        }
        out
    }

    #[test]
    fn reads_pairs_in_order_with_repeats_and_empty_values() {
        let pairs: &[(&[u8], &[u8])] = &[
            (b":method", b"GET"),
            (b":path", b"/rest/api/2/issue/P-1"),
            (b"x-empty", b""),
            (b"x-run-as", b"alice"),
            (b"x-run-as", b"bob"),
            (b"x-bytes", b"\xff\xfe\x00z"),
        ];
        let block = HeaderBlock::parse(host_layout(pairs)).unwrap();
        assert_eq!(block.len(), 6);
        assert_eq!(block.iter().collect::<Vec<_>>(), pairs.to_vec());
        assert_eq!(block.get(":path"), Some(&b"/rest/api/2/issue/P-1"[..]));
        assert_eq!(block.get("x-run-as"), Some(&b"alice"[..]));
        assert_eq!(block.count("x-run-as"), 2);
        assert_eq!(block.get("x-empty"), Some(&b""[..]));
        assert_eq!(block.get("x-bytes"), Some(&b"\xff\xfe\x00z"[..]));
        assert!(!block.has("cookie"));
        assert_eq!(block.get("X-RUN-AS"), None, "names compare byte for byte");
    }

    #[test]
    fn serialize_round_trips_and_matches_the_host_layout() {
        let pairs = [
            ("content-type", "application/json"),
            ("www-authenticate", ""),
            ("x", "y"),
        ];
        let bytes = serialize(&pairs);
        let raw: Vec<(&[u8], &[u8])> = pairs
            .iter()
            .map(|(n, v)| (n.as_bytes(), v.as_bytes()))
            .collect();
        assert_eq!(bytes, host_layout(&raw));
        let block = HeaderBlock::parse(bytes).unwrap();
        let back: Vec<(&[u8], &[u8])> = block.iter().collect();
        assert_eq!(back, raw);
        assert_eq!(serialize(&[]), 0u32.to_le_bytes().to_vec());
    }

    #[test]
    fn empty_buffer_and_zero_count_are_empty_maps() {
        assert!(HeaderBlock::parse(Vec::new()).unwrap().is_empty());
        let block = HeaderBlock::parse(host_layout(&[])).unwrap();
        assert!(block.is_empty());
        assert_eq!(block.iter().count(), 0);
    }

    #[test]
    fn refuses_every_truncation_and_corruption() {
        let good = host_layout(&[(b"authorization", b"Bearer x"), (b"cookie", b"a=b")]);
        for cut in 1..good.len() {
            assert!(
                HeaderBlock::parse(good[..cut].to_vec()).is_none(),
                "truncated at {cut}"
            );
        }
        let mut trailing = good.clone();
        trailing.push(0);
        assert!(
            HeaderBlock::parse(trailing).is_none(),
            "bytes after the last pair"
        );
        // A size that points past the NUL, a missing NUL, a huge count.
        let mut bad = good.clone();
        bad[4] += 1;
        assert!(HeaderBlock::parse(bad).is_none());
        let mut no_nul = good.clone();
        let at = 4 + 16 + b"authorization".len();
        no_nul[at] = b'x';
        assert!(HeaderBlock::parse(no_nul).is_none());
        let mut huge = good;
        huge[..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(HeaderBlock::parse(huge).is_none());
    }
}
