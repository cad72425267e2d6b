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

/// Text of a C string from the kernel: valid UTF-8 is kept as is; each byte of an
/// invalid sequence is written `\xNN`. Never panics, never drops a byte.
pub fn kstr(bytes: &[u8]) -> String {
    escape(until_nul(bytes))
}

/// Like [`kstr`] for bytes that are not NUL-terminated.
pub fn escape(mut bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    loop {
        match std::str::from_utf8(bytes) {
            Ok(s) => {
                out.push_str(s);
                return out;
            }
            Err(e) => {
                let (good, rest) = bytes.split_at(e.valid_up_to());
                // SAFETY-free: `good` was just validated.
                out.push_str(std::str::from_utf8(good).unwrap_or_default());
                let bad = e.error_len().unwrap_or(rest.len());
                for b in &rest[..bad] {
                    let _ = write!(out, "\\x{b:02x}");
                }
                bytes = &rest[bad..];
            }
        }
    }
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
