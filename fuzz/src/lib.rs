//! What the fuzz targets share: a JSON checker that refuses duplicate keys
//! (serde_json keeps the last one silently), and a scratch folder per
//! process for the targets that read files.

use std::{collections::HashSet, fmt, path::PathBuf};

use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};

/// Parses `text` as JSON, failing on a key that appears twice in one object
/// (at any depth).
pub fn check_json_no_duplicates(text: &str) -> Result<(), String> {
    let mut de = serde_json::Deserializer::from_str(text);
    <NoDup as de::Deserialize>::deserialize(&mut de).map_err(|e| e.to_string())?;
    de.end().map_err(|e| e.to_string())
}

struct NoDup;

impl<'de> de::Deserialize<'de> for NoDup {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<NoDup, D::Error> {
        d.deserialize_any(NoDupVisitor)
    }
}

struct NoDupVisitor;

impl<'de> Visitor<'de> for NoDupVisitor {
    type Value = NoDup;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<NoDup, E> {
        Ok(NoDup)
    }
    fn visit_i64<E>(self, _: i64) -> Result<NoDup, E> {
        Ok(NoDup)
    }
    fn visit_u64<E>(self, _: u64) -> Result<NoDup, E> {
        Ok(NoDup)
    }
    fn visit_f64<E>(self, _: f64) -> Result<NoDup, E> {
        Ok(NoDup)
    }
    fn visit_str<E>(self, _: &str) -> Result<NoDup, E> {
        Ok(NoDup)
    }
    fn visit_unit<E>(self) -> Result<NoDup, E> {
        Ok(NoDup)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<NoDup, A::Error> {
        while seq.next_element::<NoDup>()?.is_some() {}
        Ok(NoDup)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<NoDup, A::Error> {
        let mut keys = HashSet::new();
        while let Some(k) = map.next_key::<String>()? {
            if !keys.insert(k.clone()) {
                return Err(de::Error::custom(format!("duplicate key {k:?}")));
            }
            map.next_value::<NoDup>()?;
        }
        Ok(NoDup)
    }
}

/// CRC-32 (IEEE), as crc32fast computes it: the targets set the checksums
/// of what they build so the fuzzer gets past them (bitwise: inputs are small).
pub fn crc32(b: &[u8]) -> u32 {
    let mut c = !0u32;
    for &x in b {
        c ^= u32::from(x);
        for _ in 0..8 {
            c = if c & 1 != 0 { (c >> 1) ^ 0xEDB8_8320 } else { c >> 1 };
        }
    }
    !c
}

/// An empty folder of this process's own under the temporary directory.
pub fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("shrike-fuzz-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("scratch folder");
    d
}

#[cfg(test)]
mod tests {
    #[test]
    fn duplicates_are_found_at_any_depth() {
        assert!(super::check_json_no_duplicates(r#"{"a":1,"b":[{"c":1,"d":2}]}"#).is_ok());
        assert!(super::check_json_no_duplicates(r#"{"a":1,"a":2}"#).is_err());
        assert!(super::check_json_no_duplicates(r#"{"a":[{"c":1,"c":2}]}"#).is_err());
        assert!(super::check_json_no_duplicates(r#"{"a":1} x"#).is_err());
    }

    #[test]
    fn crc32_is_ieee() {
        assert_eq!(super::crc32(b"123456789"), 0xCBF4_3926);
    }
}
