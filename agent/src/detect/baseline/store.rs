//! The profile on disk: `<state_dir>/baseline.profile`, one header line then
//! the profile as JSON:
//!
//! ```text
//! SHRIKE-BASELINE 1 <id> <length of the JSON in bytes> <crc32 of the JSON, 8 hex>\n
//! {"id":"...","learn_started":...,"executables":{...},"overflow":{...}}
//! ```
//!
//! Written atomically (a temporary file in the same folder, `.tmp.PID`, fsync, rename,
//! fsync of the folder): a crash leaves the old file or the new one, never a
//! mix. A file that is torn (shorter or longer than its header says),
//! corrupt (checksum), of another version or not ours is refused with the
//! reason; the agent then learns again from scratch.

use std::{
    io::Read,
    path::{Path, PathBuf},
};

use super::profile::{Profile, caps};

pub const FILE_NAME: &str = "baseline.profile";
const MAGIC: &str = "SHRIKE-BASELINE";
pub const VERSION: u32 = 1;

/// Why a profile file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("no profile yet")]
    Missing,
    #[error("cannot read it: {0}")]
    Io(std::io::Error),
    /// Torn, corrupt, another version, not a profile: the reason.
    #[error("{0}")]
    Damaged(String),
}

pub fn path_in(state_dir: &Path) -> PathBuf {
    state_dir.join(FILE_NAME)
}

/// The file's bytes for `p`.
pub fn encode(p: &Profile) -> Vec<u8> {
    let body = serde_json::to_vec(p).unwrap_or_default();
    let mut out =
        format!("{MAGIC} {VERSION} {} {} {:08x}\n", p.id, body.len(), crc32fast::hash(&body)).into_bytes();
    out.extend_from_slice(&body);
    out
}

/// The profile in `bytes`, checked (header, length, checksum, JSON, caps).
pub fn decode(bytes: &[u8]) -> Result<Profile, String> {
    let nl = bytes
        .iter()
        .take(256)
        .position(|&b| b == b'\n')
        .ok_or_else(|| "no header line (empty, torn, or not a baseline profile)".to_owned())?;
    let header = std::str::from_utf8(&bytes[..nl]).map_err(|_| "header is not text".to_owned())?;
    let f: Vec<&str> = header.split(' ').collect();
    if f.first() != Some(&MAGIC) {
        return Err(format!("not a Shrike baseline profile (header {:?})", truncate(header)));
    }
    if f.len() != 5 {
        return Err(format!("malformed header {:?}", truncate(header)));
    }
    let version: u32 = f[1].parse().map_err(|_| format!("malformed version {:?}", f[1]))?;
    if version != VERSION {
        return Err(format!("format version {version}, this agent reads version {VERSION}"));
    }
    let len: usize = f[3].parse().map_err(|_| format!("malformed length {:?}", f[3]))?;
    let crc = u32::from_str_radix(f[4], 16).map_err(|_| format!("malformed checksum {:?}", f[4]))?;
    let body = &bytes[nl + 1..];
    if body.len() != len {
        return Err(format!("torn: the header says {len} bytes of profile, the file has {}", body.len()));
    }
    let actual = crc32fast::hash(body);
    if actual != crc {
        return Err(format!("corrupt: checksum {actual:08x}, the header says {crc:08x}"));
    }
    let mut p: Profile = serde_json::from_slice(body).map_err(|e| format!("unreadable profile: {e}"))?;
    if p.id != f[2] {
        return Err(format!("the header's id {} is not the profile's {}", f[2], p.id));
    }
    if p.enforce_caps() {
        tracing::warn!("baseline profile over its caps (edited?): the excess was dropped");
    }
    Ok(p)
}

fn truncate(s: &str) -> String {
    s.chars().take(40).collect()
}

/// Reads and checks the profile at `path`.
pub fn read(path: &Path) -> Result<Profile, LoadError> {
    // Not through a link, and only a file of root's or the agent's user.
    let f = match crate::ownfile::open_own(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(LoadError::Missing),
        Err(e) => return Err(LoadError::Io(e)),
    };
    let mut bytes = Vec::new();
    // One byte more than allowed tells an oversized file.
    f.take(caps::FILE_BYTES + 1).read_to_end(&mut bytes).map_err(LoadError::Io)?;
    if bytes.len() as u64 > caps::FILE_BYTES {
        return Err(LoadError::Damaged(format!("larger than {} bytes", caps::FILE_BYTES)));
    }
    decode(&bytes).map_err(LoadError::Damaged)
}

/// The id in the file's header, when it has one (a cheap check for a reset
/// made while the agent runs).
pub fn read_id(path: &Path) -> Option<String> {
    let mut buf = [0u8; 256];
    let n = crate::ownfile::open_own(path).ok()?.read(&mut buf).ok()?;
    let line = std::str::from_utf8(&buf[..n]).ok()?.split('\n').next()?;
    let f: Vec<&str> = line.split(' ').collect();
    (f.len() == 5 && f[0] == MAGIC).then(|| f[2].to_owned())
}

/// Writes `p` to `path` atomically (a new 0600 temporary file per process,
/// fsync, rename, fsync of the folder), creating the folder (mode 0700) if
/// needed; a link planted at either name is replaced, never followed.
pub fn write(path: &Path, p: &Profile) -> std::io::Result<()> {
    crate::ownfile::write_atomic(path, &encode(p))
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::{super::profile::Aspect, *};

    fn sample() -> Profile {
        let mut p = Profile::new();
        p.learn_started = Some(1_800_000_000);
        p.learn_until = Some(1_800_086_400);
        p.learn("/usr/bin/true", &[(Aspect::User, "root")], &mut Vec::new());
        p
    }

    #[test]
    fn round_trip_and_damage_is_named() {
        let p = sample();
        let bytes = encode(&p);
        assert_eq!(decode(&bytes).unwrap(), p);
        let err = |b: &[u8]| decode(b).unwrap_err();
        assert!(err(&bytes[..bytes.len() - 5]).starts_with("torn"), "{}", err(&bytes[..bytes.len() - 5]));
        assert!(err(&bytes[..10]).contains("no header"));
        assert!(err(b"").contains("no header"));
        let mut flipped = bytes.clone();
        let last = flipped.len() - 3;
        flipped[last] ^= 0x20;
        assert!(err(&flipped).starts_with("corrupt"), "{}", err(&flipped));
        let v2 = String::from_utf8(bytes.clone()).unwrap().replacen(" 1 ", " 2 ", 1);
        assert!(err(v2.as_bytes()).contains("version 2"), "{}", err(v2.as_bytes()));
        assert!(err(b"{\"id\":\"x\"}\n").contains("not a Shrike baseline"));
        let mut longer = bytes.clone();
        longer.extend_from_slice(b"garbage");
        assert!(err(&longer).starts_with("torn"));
    }

    #[test]
    fn atomic_save_leaves_no_temporary_and_survives_a_crashed_one() {
        let dir = std::env::temp_dir().join(format!("shrike-baseline-store-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let path = path_in(&dir.join("state"));
        let p = sample();
        write(&path, &p).unwrap();
        assert_eq!(read(&path).unwrap(), p);
        let tmp = dir.join(format!("state/baseline.profile.tmp.{}", std::process::id()));
        assert!(!tmp.exists(), "the temporary file was renamed");
        // A crash during a save leaves a torn temporary file: the profile
        // itself is whole, and the next save replaces the leftover.
        fs::write(&tmp, &encode(&p)[..20]).unwrap();
        assert_eq!(read(&path).unwrap(), p);
        assert_eq!(read_id(&path).as_deref(), Some(p.id.as_str()));
        let mut q = p.clone();
        q.learn("/usr/bin/false", &[], &mut Vec::new());
        write(&path, &q).unwrap();
        assert_eq!(read(&path).unwrap(), q);
        assert!(!tmp.exists());
        assert!(matches!(read(&dir.join("none")), Err(LoadError::Missing)));
        fs::remove_dir_all(&dir).unwrap();
    }
}
