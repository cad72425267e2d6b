//! uid -> user name from the passwd file, reloaded when it changes.

use std::{collections::HashMap, path::PathBuf, time::SystemTime};

pub struct Users {
    path: PathBuf,
    names: HashMap<u32, String>,
    mtime: Option<SystemTime>,
}

impl Users {
    pub fn new(path: impl Into<PathBuf>) -> Users {
        let mut u = Users { path: path.into(), names: HashMap::new(), mtime: None };
        u.reload();
        u
    }

    fn reload(&mut self) {
        let mtime = std::fs::metadata(&self.path).and_then(|m| m.modified()).ok();
        if mtime.is_some() && mtime == self.mtime {
            return;
        }
        self.mtime = mtime;
        if let Ok(text) = std::fs::read_to_string(&self.path) {
            self.names = parse_passwd(&text);
        }
    }

    /// The name of `uid`; on a miss the file is re-read if it changed (a user
    /// created since start).
    pub fn name(&mut self, uid: u32) -> Option<String> {
        if !self.names.contains_key(&uid) {
            self.reload();
        }
        self.names.get(&uid).cloned()
    }
}

pub fn parse_passwd(text: &str) -> HashMap<u32, String> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let mut f = l.split(':');
            let name = f.next()?;
            let uid = f.nth(1)?.parse().ok()?;
            Some((uid, name.to_owned()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_passwd_and_skips_junk() {
        let m = parse_passwd(
            "root:x:0:0:root:/root:/bin/bash\n# c\nbad line\nbob:x:1000:1000::/home/bob:/bin/sh\n",
        );
        assert_eq!(m.get(&0).map(String::as_str), Some("root"));
        assert_eq!(m.get(&1000).map(String::as_str), Some("bob"));
        assert_eq!(m.len(), 2);
    }
}
