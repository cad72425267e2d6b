//! Kernel bytes to text. Nothing from the kernel is trusted: it may be cut,
//! unterminated, or not UTF-8 (a hostile process name is just bytes).

use std::fmt::Write as _;

/// The bytes before the first NUL (all of them when there is none).
pub fn until_nul(bytes: &[u8]) -> &[u8] {
    match bytes.iter().position(|&b| b == 0) {
        Some(n) => &bytes[..n],
        None => bytes,
    }
}

/// Text of a C string from the kernel: valid UTF-8 is kept as is, except
/// that a backslash is written `\\`; each byte of an invalid sequence is
/// written `\xNN`. So the text `\xff` (`\\xff`) and the byte 0xFF (`\xff`)
/// never look alike, and [`unescape`] gives back the exact bytes. Never
/// panics, never drops a byte.
pub fn kstr(bytes: &[u8]) -> String {
    escape(until_nul(bytes))
}

/// Like [`kstr`] for bytes that are not NUL-terminated.
pub fn escape(mut bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    let push_text = |out: &mut String, s: &str| {
        for (i, part) in s.split('\\').enumerate() {
            if i > 0 {
                out.push_str("\\\\");
            }
            out.push_str(part);
        }
    };
    loop {
        match std::str::from_utf8(bytes) {
            Ok(s) => {
                push_text(&mut out, s);
                return out;
            }
            Err(e) => {
                let (good, rest) = bytes.split_at(e.valid_up_to());
                // SAFETY-free: `good` was just validated.
                push_text(&mut out, std::str::from_utf8(good).unwrap_or_default());
                let bad = e.error_len().unwrap_or(rest.len());
                for b in &rest[..bad] {
                    let _ = write!(out, "\\x{b:02x}");
                }
                bytes = &rest[bad..];
            }
        }
    }
}

/// The bytes [`escape`] was given: `\\` is a backslash, `\xNN` the byte NN.
/// Text that `escape` cannot have written (a lone backslash, a bad hex
/// digit) is an error naming its position.
pub fn unescape(text: &str) -> Result<Vec<u8>, String> {
    let b = text.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'\\' {
            out.push(b[i]);
            i += 1;
            continue;
        }
        match b.get(i + 1) {
            Some(b'\\') => {
                out.push(b'\\');
                i += 2;
            }
            Some(b'x') => {
                let hex = text.get(i + 2..i + 4).ok_or_else(|| format!("cut \\x escape at byte {i}"))?;
                out.push(u8::from_str_radix(hex, 16).map_err(|_| format!("bad \\x escape at byte {i}"))?);
                i += 4;
            }
            _ => return Err(format!("lone backslash at byte {i}")),
        }
    }
    Ok(out)
}

/// The text rules match (Sigma's `CommandLine: 'C:\\x'`, a path with a
/// backslash): escaped backslashes back to one; invalid bytes stay `\xNN`.
/// Borrowed when there is no backslash (nearly always).
pub fn matchable(text: &str) -> std::borrow::Cow<'_, str> {
    if text.contains("\\\\") { text.replace("\\\\", "\\").into() } else { text.into() }
}

/// Splits a buffer of NUL-terminated strings (argv as the kernel captured it).
pub fn split_args(buf: &[u8], argc: usize) -> Vec<String> {
    // argc comes from the kernel record: never trust it for an allocation.
    let mut args = Vec::with_capacity(argc.min(buf.len() + 1).min(64));
    let mut rest = buf;
    while args.len() < argc && !rest.is_empty() {
        let arg = until_nul(rest);
        args.push(escape(arg));
        rest = rest.get(arg.len() + 1..).unwrap_or_default();
    }
    args
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_utf8_is_kept() {
        assert_eq!(kstr("héllo wörld\0junk".as_bytes()), "héllo wörld");
        assert_eq!(kstr(b"no-nul"), "no-nul");
        assert_eq!(kstr(b"\0"), "");
    }

    #[test]
    fn invalid_bytes_are_escaped_not_lost() {
        assert_eq!(kstr(b"a\xffb\xc3\0"), "a\\xffb\\xc3");
        assert_eq!(escape(b"\xe2\x82"), "\\xe2\\x82");
        assert_eq!(escape(b"ok\xf0\x9f\x98\x80"), "ok\u{1F600}");
    }

    /// Defect: the text `\xff` and the byte 0xFF both printed `\xff`.
    #[test]
    fn a_backslash_is_escaped_so_text_and_bytes_differ() {
        assert_eq!(escape(b"\\xff"), "\\\\xff");
        assert_eq!(escape(b"\xff"), "\\xff");
        assert_ne!(escape(b"\\xff"), escape(b"\xff"));
        assert_eq!(escape(b"C:\\dir\\\xff\\"), "C:\\\\dir\\\\\\xff\\\\");
        assert_eq!(matchable(&escape(b"a\\x\xffb")), "a\\x\\xffb");
    }

    #[test]
    fn unescape_gives_back_the_exact_bytes() {
        let samples: [&[u8]; 9] = [
            b"",
            b"plain",
            b"\\xff",
            b"\xff",
            b"\\\\\xff\\x",
            b"caf\xc3\xa9 \xc3",
            b"\xe2\x82\\",
            b"\x00\x01\x7f\x80\xfe",
            "héllo \\u{1F600}".as_bytes(),
        ];
        for s in samples {
            assert_eq!(unescape(&escape(s)).as_deref(), Ok(s), "{s:?} -> {:?}", escape(s));
        }
        // Every byte pair, valid UTF-8 or not.
        for a in 0..=255u8 {
            for b in [0u8, b'\\', b'x', 0x80, 0xc3, 0xff] {
                let s = [a, b, a];
                assert_eq!(unescape(&escape(&s)).as_deref(), Ok(&s[..]));
            }
        }
        for bad in ["\\", "a\\", "\\q", "\\x", "\\x4", "\\xzz", "\\x\u{e9}"] {
            assert!(unescape(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn control_characters_survive_as_text() {
        // JSON serialization escapes them; here they are kept.
        assert_eq!(kstr(b"evil\nname\x1b[31m"), "evil\nname\x1b[31m");
    }

    #[test]
    fn args_split_including_empty_ones() {
        assert_eq!(split_args(b"ls\0\0-l\0", 3), vec!["ls", "", "-l"]);
        // Fewer strings than argc (cut buffer): what is there, no panic.
        assert_eq!(split_args(b"a\0b", 5), vec!["a", "b"]);
        assert_eq!(split_args(b"", 2), Vec::<String>::new());
    }
}
