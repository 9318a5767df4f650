//! Decoding a serialized `google.protobuf.Struct` into JSON.
//!
//! Envoy hands a plugin `configuration` of type Struct to the VM as the Struct's protobuf
//! bytes (only StringValue/BytesValue arrive raw), so a YAML config written under
//! `@type: google.protobuf.Struct` needs this small decoder. Istio's `pluginConfig` arrives as
//! JSON text instead.

use serde_json::{Map, Number, Value};

/// Nesting bound: a config is admin-supplied, but recursion must stay bounded.
const MAX_DEPTH: usize = 64;

/// Decodes Struct bytes into a JSON object.
pub fn decode_struct(bytes: &[u8]) -> Result<Value, String> {
    let mut r = Reader { buf: bytes, pos: 0 };
    r.read_struct(bytes.len(), 0)
}

/// Like [`decode_struct`], but the elements of the top-level list named `key` are handed to
/// `on_item` one at a time instead of being collected (the key is then absent from the
/// result), so a large list never exists as one tree. `on_item` failing stops the decoding.
pub fn decode_struct_streaming(
    bytes: &[u8],
    key: &str,
    on_item: &mut dyn FnMut(Value) -> Result<(), ()>,
) -> Result<Value, String> {
    let mut r = Reader { buf: bytes, pos: 0 };
    let mut map = Map::new();
    while r.pos < bytes.len() {
        let tag = r.varint()?;
        if tag != (1 << 3) | 2 {
            r.skip(tag & 7)?;
            continue;
        }
        let entry_end = r.len_delimited()?;
        let mut name = String::new();
        let mut value = None;
        while r.pos < entry_end {
            match r.varint()? {
                0x0a => name = r.string()?,
                0x12 => {
                    let e = r.len_delimited()?;
                    // Envoy writes the key first; a value before its key is collected.
                    value = if name == key {
                        r.stream_list(e, on_item)?
                    } else {
                        Some(r.read_value(e, 1)?)
                    };
                }
                t => r.skip(t & 7)?,
            }
        }
        if let Some(v) = value {
            if map.insert(name.clone(), v).is_some() {
                return Err(format!("duplicate key `{name}`"));
            }
        }
    }
    Ok(Value::Object(map))
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn byte(&mut self) -> Result<u8, String> {
        let b = *self.buf.get(self.pos).ok_or("truncated protobuf")?;
        self.pos += 1;
        Ok(b)
    }

    fn varint(&mut self) -> Result<u64, String> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err("varint too long".into())
    }

    fn len_delimited(&mut self) -> Result<usize, String> {
        let len = usize::try_from(self.varint()?).map_err(|_| "length too large")?;
        let end = self.pos.checked_add(len).ok_or("length too large")?;
        if end > self.buf.len() {
            return Err("truncated protobuf".into());
        }
        Ok(end)
    }

    fn skip(&mut self, wire: u64) -> Result<(), String> {
        match wire {
            0 => self.varint().map(|_| ()),
            1 => self.advance(8),
            2 => {
                let end = self.len_delimited()?;
                self.pos = end;
                Ok(())
            }
            5 => self.advance(4),
            _ => Err(format!("unsupported wire type {wire}")),
        }
    }

    fn advance(&mut self, n: usize) -> Result<(), String> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|e| *e <= self.buf.len())
            .ok_or("truncated protobuf")?;
        self.pos = end;
        Ok(())
    }

    fn string(&mut self) -> Result<String, String> {
        let end = self.len_delimited()?;
        let bytes = self.buf.get(self.pos..end).ok_or("truncated protobuf")?;
        self.pos = end;
        String::from_utf8(bytes.to_vec()).map_err(|_| "string is not UTF-8".into())
    }

    fn read_struct(&mut self, end: usize, depth: usize) -> Result<Value, String> {
        if depth > MAX_DEPTH {
            return Err("configuration nested too deeply".into());
        }
        let mut map = Map::new();
        while self.pos < end {
            let tag = self.varint()?;
            if tag == (1 << 3) | 2 {
                let entry_end = self.len_delimited()?;
                let (mut key, mut value) = (String::new(), Value::Null);
                while self.pos < entry_end {
                    let t = self.varint()?;
                    match t {
                        0x0a => key = self.string()?,
                        0x12 => {
                            let e = self.len_delimited()?;
                            value = self.read_value(e, depth + 1)?;
                        }
                        _ => self.skip(t & 7)?,
                    }
                }
                if map.insert(key.clone(), value).is_some() {
                    return Err(format!("duplicate key `{key}`"));
                }
            } else {
                self.skip(tag & 7)?;
            }
        }
        Ok(Value::Object(map))
    }

    /// A Value message holding a list: its elements go to `on_item` (`None` returned);
    /// any other kind of value is returned as usual.
    fn stream_list(
        &mut self,
        end: usize,
        on_item: &mut dyn FnMut(Value) -> Result<(), ()>,
    ) -> Result<Option<Value>, String> {
        let start = self.pos;
        if self.varint()? != 0x32 {
            self.pos = start;
            return self.read_value(end, 1).map(Some);
        }
        let list_end = self.len_delimited()?;
        while self.pos < list_end {
            let t = self.varint()?;
            if t == 0x0a {
                let ve = self.len_delimited()?;
                let item = self.read_value(ve, 2)?;
                on_item(item).map_err(|()| "item refused".to_owned())?;
            } else {
                self.skip(t & 7)?;
            }
        }
        if self.pos != end {
            return Err("malformed protobuf value".into());
        }
        Ok(None)
    }

    fn read_value(&mut self, end: usize, depth: usize) -> Result<Value, String> {
        let mut value = Value::Null;
        while self.pos < end {
            let tag = self.varint()?;
            value = match tag {
                0x08 => {
                    self.varint()?;
                    Value::Null
                }
                0x11 => {
                    let bytes = self
                        .buf
                        .get(self.pos..self.pos + 8)
                        .ok_or("truncated protobuf")?;
                    let mut a = [0u8; 8];
                    a.copy_from_slice(bytes);
                    self.pos += 8;
                    let f = f64::from_le_bytes(a);
                    // Integral doubles become integers so that `1048576` reads as written.
                    if f.fract() == 0.0 && f.abs() < 9.0e15 {
                        Value::Number(Number::from(f as i64))
                    } else {
                        Number::from_f64(f)
                            .map(Value::Number)
                            .ok_or("number is not finite")?
                    }
                }
                0x1a => Value::String(self.string()?),
                0x20 => Value::Bool(self.varint()? != 0),
                0x2a => {
                    let e = self.len_delimited()?;
                    self.read_struct(e, depth + 1)?
                }
                0x32 => {
                    let e = self.len_delimited()?;
                    let mut items = Vec::new();
                    while self.pos < e {
                        let t = self.varint()?;
                        if t == 0x0a {
                            let ve = self.len_delimited()?;
                            items.push(self.read_value(ve, depth + 1)?);
                        } else {
                            self.skip(t & 7)?;
                        }
                    }
                    Value::Array(items)
                }
                other => {
                    self.skip(other & 7)?;
                    value
                }
            };
        }
        if self.pos != end {
            return Err("malformed protobuf value".into());
        }
        Ok(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // A minimal encoder for the test cases.
    fn len(out: &mut Vec<u8>, tag: u8, body: &[u8]) {
        out.push(tag);
        let mut n = body.len();
        loop {
            let b = (n & 0x7f) as u8;
            n >>= 7;
            if n == 0 {
                out.push(b);
                break;
            }
            out.push(b | 0x80);
        }
        out.extend_from_slice(body);
    }

    fn enc_value(v: &Value) -> Vec<u8> {
        let mut out = Vec::new();
        match v {
            Value::Null => out.extend_from_slice(&[0x08, 0]),
            Value::Number(n) => {
                out.push(0x11);
                out.extend_from_slice(&n.as_f64().unwrap().to_le_bytes());
            }
            Value::String(s) => len(&mut out, 0x1a, s.as_bytes()),
            Value::Bool(b) => out.extend_from_slice(&[0x20, u8::from(*b)]),
            Value::Object(_) => len(&mut out, 0x2a, &enc_struct(v)),
            Value::Array(items) => {
                let mut list = Vec::new();
                for i in items {
                    len(&mut list, 0x0a, &enc_value(i));
                }
                len(&mut out, 0x32, &list);
            }
        }
        out
    }

    fn enc_struct(v: &Value) -> Vec<u8> {
        let mut out = Vec::new();
        for (k, val) in v.as_object().unwrap() {
            let mut entry = Vec::new();
            len(&mut entry, 0x0a, k.as_bytes());
            len(&mut entry, 0x12, &enc_value(val));
            len(&mut out, 0x0a, &entry);
        }
        out
    }

    #[test]
    fn round_trip() {
        let v = serde_json::json!({
            "max_body_bytes": 1048576, "ratio": 0.5, "secure_mode": true, "x": null,
            "tokens": [{"id": "a", "ips": ["10.0.0.0/8"], "nested": {"k": "v"}}], "empty": []
        });
        assert_eq!(decode_struct(&enc_struct(&v)).unwrap(), v);
        assert_eq!(decode_struct(&[]).unwrap(), serde_json::json!({}));
    }

    #[test]
    fn streams_a_top_level_list() {
        let v = serde_json::json!({"a": 1, "tokens": [{"id": "x"}, {"id": "y"}]});
        let mut seen = Vec::new();
        let rest = decode_struct_streaming(&enc_struct(&v), "tokens", &mut |item| {
            seen.push(item);
            Ok(())
        })
        .unwrap();
        assert_eq!(rest, serde_json::json!({"a": 1}));
        assert_eq!(
            seen,
            vec![
                serde_json::json!({"id": "x"}),
                serde_json::json!({"id": "y"})
            ]
        );
        // Not a list: kept in the result for the caller to refuse.
        let v = serde_json::json!({"tokens": "nope"});
        let rest = decode_struct_streaming(&enc_struct(&v), "tokens", &mut |_| Err(())).unwrap();
        assert_eq!(rest, v);
        // A refused item stops decoding.
        let v = serde_json::json!({"tokens": [1, 2]});
        assert!(decode_struct_streaming(&enc_struct(&v), "tokens", &mut |_| Err(())).is_err());
    }

    #[test]
    fn rejects_garbage() {
        assert!(decode_struct(&[0x0a, 0x05, 0x0a]).is_err());
        assert!(decode_struct(&[0x0a, 0xff]).is_err());
        assert!(decode_struct(b"\x0a\x04\x0a\x02\xff\xfe").is_err());
    }
}
