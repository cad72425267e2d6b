//! IoC list files: parsing and the lookup sets.
//!
//! A file is either a plain list (one entry a line: an IPv4/IPv6 address, a
//! CIDR, a domain name, a SHA-256; `#` starts a comment; hosts-file lines
//! `0.0.0.0 evil.example` give their domain) or CSV with a header naming its
//! columns, the shape of public feeds (abuse.ch's Feodo, URLhaus and
//! MalwareBazaar exports put that header in a `#` comment line). In a CSV
//! file only the columns named like indicators are read (`dst_ip`,
//! `ip_address`, `sha256_hash`, `domain`, `url`, `ioc_value`...: see
//! [`VALUE_COLUMNS`]); each value is classified by its shape. A URL gives its
//! host when that is an IP address; a URL's domain is not loaded (feeds of
//! URLs list files on shared hosting — github.com, discord's CDN — whose
//! domain is no indicator), it is counted in `url_hosts_skipped`.
//!
//! Sets are built for memory and lookup cost at a million entries: IPv4 and
//! IPv6 addresses and CIDRs as sorted, merged ranges of integers (binary
//! search), SHA-256s as a sorted `Vec<[u8; 32]>`, domains as a sorted vector
//! of 64-bit FNV-1a hashes of the lowercase name (a false match needs a
//! 64-bit collision with a listed name: ~1e-8 over a million entries).

use std::{
    io::{BufRead, BufReader},
    net::IpAddr,
    path::Path,
};

/// CSV columns whose values are indicators (lowercase, quotes stripped).
pub const VALUE_COLUMNS: &[&str] = &[
    "ip",
    "ip_address",
    "ipaddress",
    "dst_ip",
    "dstip",
    "ipv4",
    "ipv6",
    "address",
    "cidr",
    "network",
    "domain",
    "hostname",
    "host",
    "fqdn",
    "sha256",
    "sha256_hash",
    "hash",
    "url",
    "ioc",
    "ioc_value",
    "indicator",
    "value",
];

/// At most this many malformed lines are kept (with their line numbers) per
/// file; the rest are only counted.
pub const MALFORMED_KEPT: usize = 10;

/// One classified value.
#[derive(Clone, Debug, PartialEq)]
pub enum Entry {
    V4(u32, u32),
    V6(u128, u128),
    Sha256([u8; 32]),
    Domain(String),
    /// A URL whose host is a name (not loaded, counted).
    UrlDomain,
}

/// Counts of what a file held.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Counts {
    pub ipv4: u64,
    pub ipv6: u64,
    pub cidr: u64,
    pub sha256: u64,
    pub domains: u64,
    pub url_hosts_skipped: u64,
    pub malformed: u64,
}

impl Counts {
    pub fn entries(&self) -> u64 {
        self.ipv4 + self.ipv6 + self.cidr + self.sha256 + self.domains
    }

    pub fn add(&mut self, o: &Counts) {
        self.ipv4 += o.ipv4;
        self.ipv6 += o.ipv6;
        self.cidr += o.cidr;
        self.sha256 += o.sha256;
        self.domains += o.domains;
        self.url_hosts_skipped += o.url_hosts_skipped;
        self.malformed += o.malformed;
    }
}

/// The lookup sets of one file.
#[derive(Debug, Default)]
pub struct IocSet {
    /// Inclusive ranges, sorted, non-overlapping, adjacent ones merged.
    v4: Vec<(u32, u32)>,
    v6: Vec<(u128, u128)>,
    hashes: Vec<[u8; 32]>,
    domains: Vec<u64>,
    pub counts: Counts,
    /// The first malformed lines: (line number, reason).
    pub malformed: Vec<(usize, String)>,
}

impl IocSet {
    pub fn has_hashes(&self) -> bool {
        !self.hashes.is_empty()
    }

    pub fn has_domains(&self) -> bool {
        !self.domains.is_empty()
    }

    pub fn contains_ip(&self, ip: IpAddr) -> bool {
        match canonical(ip) {
            IpAddr::V4(a) => in_ranges(&self.v4, u32::from(a)),
            IpAddr::V6(a) => in_ranges(&self.v6, u128::from(a)),
        }
    }

    pub fn contains_sha256(&self, h: &[u8; 32]) -> bool {
        self.hashes.binary_search(h).is_ok()
    }

    /// `name` (lowercase, no trailing dot) is listed.
    pub fn contains_domain(&self, name: &str) -> bool {
        self.domains.binary_search(&fnv1a(name.as_bytes())).is_ok()
    }

    /// `name` or one of its parent domains (down to two labels) is listed:
    /// the listed one.
    pub fn match_domain<'a>(&self, name: &'a str) -> Option<&'a str> {
        if self.domains.is_empty() {
            return None;
        }
        let mut s = name;
        loop {
            if self.contains_domain(s) {
                return Some(s);
            }
            let (_, rest) = s.split_once('.')?;
            if !rest.contains('.') {
                return None;
            }
            s = rest;
        }
    }

    /// Reads and parses a file.
    pub fn load(path: &Path) -> std::io::Result<IocSet> {
        let f = std::fs::File::open(path)?;
        let mut b = Builder::default();
        let mut r = BufReader::with_capacity(1 << 16, f);
        let mut line = Vec::with_capacity(256);
        let mut n = 0usize;
        loop {
            line.clear();
            if r.read_until(b'\n', &mut line)? == 0 {
                break;
            }
            n += 1;
            match std::str::from_utf8(&line) {
                Ok(s) => b.line(n, s),
                Err(_) => b.bad(n, "not UTF-8".into()),
            }
        }
        Ok(b.finish())
    }

    /// Parses a list held in memory (tests).
    pub fn parse(text: &str) -> IocSet {
        let mut b = Builder::default();
        for (i, l) in text.lines().enumerate() {
            b.line(i + 1, l);
        }
        b.finish()
    }
}

fn in_ranges<T: Ord + Copy>(ranges: &[(T, T)], x: T) -> bool {
    let i = ranges.partition_point(|r| r.0 <= x);
    i > 0 && ranges[i - 1].1 >= x
}

/// IPv4-mapped IPv6 (`::ffff:1.2.3.4`, how a dual-stack socket reports an
/// IPv4 peer) is looked up as the IPv4 address.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(a) => a.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// FNV-1a, 64 bits: the domain set's key.
pub fn fnv1a(b: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &c in b {
        h ^= u64::from(c);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// Collects entries line by line, then sorts and merges.
#[derive(Default)]
struct Builder {
    set: IocSet,
    /// CSV: the indices of the value columns (None: a plain list).
    columns: Option<Vec<usize>>,
    /// A data line was seen (a header after it is data, not a header).
    data: bool,
}

impl Builder {
    fn bad(&mut self, n: usize, why: String) {
        self.set.counts.malformed += 1;
        if self.set.malformed.len() < MALFORMED_KEPT {
            self.set.malformed.push((n, why));
        }
    }

    fn add(&mut self, e: Entry) {
        let c = &mut self.set.counts;
        match e {
            Entry::V4(a, b) => {
                if a == b {
                    c.ipv4 += 1
                } else {
                    c.cidr += 1
                }
                self.set.v4.push((a, b));
            }
            Entry::V6(a, b) => {
                if a == b {
                    c.ipv6 += 1
                } else {
                    c.cidr += 1
                }
                self.set.v6.push((a, b));
            }
            Entry::Sha256(h) => {
                c.sha256 += 1;
                self.set.hashes.push(h);
            }
            Entry::Domain(d) => {
                c.domains += 1;
                self.set.domains.push(fnv1a(d.as_bytes()));
            }
            Entry::UrlDomain => c.url_hosts_skipped += 1,
        }
    }

    fn line(&mut self, n: usize, raw: &str) {
        let line = raw.trim_matches(|c: char| c.is_whitespace() || c == '\u{feff}');
        if line.is_empty() {
            return;
        }
        if let Some(comment) = line.strip_prefix('#') {
            // Feeds put their CSV header in a comment line before the data.
            if !self.data
                && let Some(cols) = header(comment)
            {
                self.columns = Some(cols);
            }
            return;
        }
        if !self.data
            && self.columns.is_none()
            && let Some(cols) = header(line)
        {
            self.columns = Some(cols);
            return;
        }
        self.data = true;
        match self.columns.clone() {
            Some(cols) => self.csv_row(n, line, &cols),
            None => self.plain(n, line),
        }
    }

    fn plain(&mut self, n: usize, line: &str) {
        // An inline comment: `1.2.3.4  # C2 of ...`.
        let line = match line.find(" #").or_else(|| line.find("\t#")) {
            Some(i) => line[..i].trim_end(),
            None => line,
        };
        let mut tokens = line.split_whitespace();
        let (Some(first), second, third) = (tokens.next(), tokens.next(), tokens.next()) else { return };
        let value = match (second, third) {
            (None, _) => first,
            // A hosts file: `0.0.0.0 evil.example` lists the domain.
            (Some(name), None) if matches!(first, "0.0.0.0" | "127.0.0.1" | "::" | "::1") => name,
            _ => return self.bad(n, format!("more than one entry on the line: {}", snippet(line))),
        };
        match classify(value) {
            Some(e) => self.add(e),
            None => self.bad(n, format!("not an address, CIDR, domain or SHA-256: {}", snippet(value))),
        }
    }

    fn csv_row(&mut self, n: usize, line: &str, cols: &[usize]) {
        let fields = split_csv(line);
        let mut bad = None;
        for &i in cols {
            let Some(v) = fields.get(i) else {
                bad = Some(format!("{} fields, column {} missing", fields.len(), i + 1));
                continue;
            };
            let v = v.trim();
            if v.is_empty() {
                continue;
            }
            match classify(v) {
                Some(e) => self.add(e),
                None => {
                    bad = Some(format!(
                        "column {}: not an address, CIDR, domain, URL or SHA-256: {}",
                        i + 1,
                        snippet(v)
                    ))
                }
            }
        }
        if let Some(why) = bad {
            self.bad(n, why);
        }
    }

    fn finish(mut self) -> IocSet {
        let s = &mut self.set;
        s.v4 = merge(std::mem::take(&mut s.v4), |x| x.checked_add(1));
        s.v6 = merge(std::mem::take(&mut s.v6), |x| x.checked_add(1));
        s.hashes.sort_unstable();
        s.hashes.dedup();
        s.hashes.shrink_to_fit();
        s.domains.sort_unstable();
        s.domains.dedup();
        s.domains.shrink_to_fit();
        self.set
    }
}

/// Sorts ranges and merges overlapping and adjacent ones.
fn merge<T: Ord + Copy>(mut v: Vec<(T, T)>, succ: impl Fn(T) -> Option<T>) -> Vec<(T, T)> {
    v.sort_unstable();
    let mut out: Vec<(T, T)> = Vec::with_capacity(v.len());
    for (a, b) in v {
        if let Some(last) = out.last_mut()
            && succ(last.1).is_none_or(|next| a <= next)
        {
            last.1 = last.1.max(b);
            continue;
        }
        out.push((a, b));
    }
    out.shrink_to_fit();
    out
}

/// The value columns of a header line, when it is one: at least one field
/// names an indicator column, and no field is itself an indicator.
fn header(line: &str) -> Option<Vec<usize>> {
    let names: Vec<String> = split_csv(line.trim()).iter().map(|f| f.trim().to_ascii_lowercase()).collect();
    let cols: Vec<usize> = names
        .iter()
        .enumerate()
        .filter(|(_, n)| VALUE_COLUMNS.contains(&n.as_str()))
        .map(|(i, _)| i)
        .collect();
    if cols.is_empty() || names.iter().any(|n| classify(n).is_some()) {
        return None;
    }
    Some(cols)
}

/// Splits a CSV line on commas outside double quotes; quotes removed (`""`
/// inside quotes is one quote).
pub fn split_csv(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' if quoted && chars.peek() == Some(&'"') => {
                cur.push('"');
                chars.next();
            }
            '"' => quoted = !quoted,
            ',' if !quoted => out.push(std::mem::take(&mut cur)),
            c => cur.push(c),
        }
    }
    out.push(cur);
    out
}

fn snippet(s: &str) -> String {
    let s: String = s.chars().take(60).collect();
    format!("{s:?}")
}

/// What a value is: an address, a CIDR, an `address:port`, a URL (its host),
/// a SHA-256 (64 hex digits), a domain name; None when it is none of those.
pub fn classify(v: &str) -> Option<Entry> {
    let v = v.trim().trim_matches('"').trim();
    if v.is_empty() {
        return None;
    }
    if let Some(i) = v.find("://") {
        let rest = &v[i + 3..];
        let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
        let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
        return match host_ip(host) {
            Some(ip) => Some(ip_entry(ip)),
            None if domain(host.rsplit_once(':').map_or(host, |(h, _)| h)).is_some() => {
                Some(Entry::UrlDomain)
            }
            None => None,
        };
    }
    if let Some((addr, bits)) = v.split_once('/') {
        let ip: IpAddr = addr.parse().ok()?;
        let bits: u32 = bits.parse().ok()?;
        return match canonical(ip) {
            IpAddr::V4(a) if bits <= 32 => {
                let mask = if bits == 0 { 0 } else { u32::MAX << (32 - bits) };
                let lo = u32::from(a) & mask;
                Some(Entry::V4(lo, lo | !mask))
            }
            IpAddr::V6(a) if bits <= 128 && !matches!(ip, IpAddr::V4(_)) => {
                let mask = if bits == 0 { 0 } else { u128::MAX << (128 - bits) };
                let lo = u128::from(a) & mask;
                Some(Entry::V6(lo, lo | !mask))
            }
            _ => None,
        };
    }
    if let Some(ip) = host_ip(v) {
        return Some(ip_entry(ip));
    }
    if v.len() == 64 && v.bytes().all(|b| b.is_ascii_hexdigit()) {
        let mut h = [0u8; 32];
        for (i, out) in h.iter_mut().enumerate() {
            *out = u8::from_str_radix(&v[2 * i..2 * i + 2], 16).ok()?;
        }
        return Some(Entry::Sha256(h));
    }
    domain(v).map(Entry::Domain)
}

fn ip_entry(ip: IpAddr) -> Entry {
    match canonical(ip) {
        IpAddr::V4(a) => Entry::V4(a.into(), a.into()),
        IpAddr::V6(a) => Entry::V6(a.into(), a.into()),
    }
}

/// An address, `address:port` or `[v6]:port`.
fn host_ip(s: &str) -> Option<IpAddr> {
    if let Ok(ip) = s.parse() {
        return Some(ip);
    }
    if let Some(rest) = s.strip_prefix('[') {
        return rest.split_once(']')?.0.parse().ok();
    }
    let (h, port) = s.rsplit_once(':')?;
    port.parse::<u16>().ok()?;
    h.parse::<std::net::Ipv4Addr>().ok().map(IpAddr::V4)
}

/// A domain name, normalized (lowercase, no trailing dot, no `*.` prefix):
/// two labels at least, letters, digits, `-` and `_`, a TLD that is not all
/// digits.
pub fn domain(s: &str) -> Option<String> {
    let s = s.strip_prefix("*.").unwrap_or(s);
    let s = s.strip_suffix('.').unwrap_or(s);
    if s.len() > 253 || !s.contains('.') {
        return None;
    }
    let mut labels = 0;
    for l in s.split('.') {
        if l.is_empty()
            || l.len() > 63
            || !l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            || l.starts_with('-')
        {
            return None;
        }
        labels += 1;
    }
    let tld = s.rsplit('.').next()?;
    if labels < 2 || tld.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(s.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn plain_list_with_comments_and_malformed_lines() {
        let set = IocSet::parse(
            "# a list\n\
             198.51.100.7\n\
             \n\
             10.20.0.0/16   # a network\n\
             2001:db8::1\n\
             2001:db8:ff00::/40\n\
             Evil.Example.\n\
             0.0.0.0 ads.example.net\n\
             e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\n\
             not an entry\n\
             300.1.1.1\n\
             10.0.0.0/33\n",
        );
        assert_eq!(
            set.counts,
            Counts { ipv4: 1, ipv6: 1, cidr: 2, sha256: 1, domains: 2, url_hosts_skipped: 0, malformed: 3 }
        );
        let lines: Vec<usize> = set.malformed.iter().map(|m| m.0).collect();
        assert_eq!(lines, [10, 11, 12], "{:?}", set.malformed);
        assert!(set.malformed[0].1.contains("more than one entry"));
        assert!(set.malformed[1].1.contains("300.1.1.1"));
        assert!(set.contains_ip(ip("198.51.100.7")));
        assert!(!set.contains_ip(ip("198.51.100.8")));
        assert!(set.contains_ip(ip("10.20.255.255")) && set.contains_ip(ip("10.20.0.0")));
        assert!(!set.contains_ip(ip("10.21.0.0")) && !set.contains_ip(ip("10.19.255.255")));
        assert!(set.contains_ip(ip("::ffff:10.20.1.2")), "IPv4-mapped is looked up as IPv4");
        assert!(set.contains_ip(ip("2001:db8::1")) && !set.contains_ip(ip("2001:db8::2")));
        assert!(set.contains_ip(ip("2001:db8:ffff:1::9")) && !set.contains_ip(ip("2001:db9::")));
        assert_eq!(set.match_domain("a.b.evil.example"), Some("evil.example"));
        assert_eq!(set.match_domain("ads.example.net"), Some("ads.example.net"));
        assert_eq!(set.match_domain("example.net"), None);
        assert_eq!(set.match_domain("notevil.example"), None);
        let mut h = [0u8; 32];
        h[0] = 0xe3;
        assert!(!set.contains_sha256(&h));
        let Some(Entry::Sha256(e)) =
            classify("E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855")
        else {
            panic!()
        };
        assert!(set.contains_sha256(&e), "hex is case-insensitive");
    }

    #[test]
    fn csv_feeds_with_commented_headers() {
        // abuse.ch Feodo Tracker's CSV export.
        let feodo = IocSet::parse(
            "################################################################\n\
             # abuse.ch Feodo Tracker Botnet C2 IP Blocklist (CSV)          #\n\
             # Last updated: 2026-12-06 03:00:00 UTC                        #\n\
             #\n\
             # first_seen_utc,dst_ip,dst_port,c2_status,last_online,malware\n\
             \"2021-01-17 07:44:46\",\"67.213.75.205\",\"443\",\"online\",\"2026-12-05\",\"QakBot\"\n\
             \"2021-01-17 07:44:46\",\"192.0.2.300\",\"443\",\"online\",\"2026-12-05\",\"QakBot\"\n\
             \"2021-01-17 07:44:46\",\"203.0.113.9\",\"8080\",\"offline\",\"2026-12-05\",\"Emotet, epoch 5\"\n\
             # END 3 entries\n",
        );
        assert_eq!((feodo.counts.ipv4, feodo.counts.malformed), (2, 1));
        assert_eq!(feodo.malformed[0].0, 7);
        assert!(feodo.malformed[0].1.contains("column 2"), "{:?}", feodo.malformed);
        assert!(feodo.contains_ip(ip("67.213.75.205")) && feodo.contains_ip(ip("203.0.113.9")));

        // MalwareBazaar: quoted header, hashes; md5/sha1 columns are ignored.
        let bazaar = IocSet::parse(
            "# \"first_seen_utc\",\"sha256_hash\",\"md5_hash\",\"sha1_hash\",\"file_name\"\n\
             \"2026-12-01 10:00:00\",\"e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\",\"d41d8cd98f00b204e9800998ecf8427e\",\"da39a3ee5e6b4b0d3255bfef95601890afd80709\",\"x, y.elf\"\n",
        );
        assert_eq!((bazaar.counts.sha256, bazaar.counts.malformed), (1, 0));

        // URLhaus: the host of a URL when it is an address; names counted.
        let urlhaus = IocSet::parse(
            "# id,dateadded,url,url_status,last_online,threat,tags,urlhaus_link,reporter\n\
             \"1\",\"2026-12-01\",\"http://198.51.100.23:8080/bins/mips\",\"online\",\"\",\"malware_download\",\"mirai\",\"https://urlhaus.abuse.ch/url/1/\",\"r\"\n\
             \"2\",\"2026-12-01\",\"https://github.com/x/y/raw/main/a.exe\",\"online\",\"\",\"malware_download\",\"\",\"https://urlhaus.abuse.ch/url/2/\",\"r\"\n\
             \"3\",\"2026-12-01\",\"http://[2001:db8::5]/x\",\"online\",\"\",\"malware_download\",\"\",\"u\",\"r\"\n",
        );
        assert_eq!((urlhaus.counts.ipv4, urlhaus.counts.ipv6, urlhaus.counts.url_hosts_skipped), (1, 1, 1));
        assert!(urlhaus.contains_ip(ip("198.51.100.23")) && urlhaus.contains_ip(ip("2001:db8::5")));
        assert_eq!(urlhaus.match_domain("github.com"), None);

        // A plain CSV (header not commented), ThreatFox-like ip:port values.
        let tf = IocSet::parse("ioc_value,ioc_type\n192.0.2.10:4444,ip:port\nbad.example,domain\n,x\n");
        assert_eq!((tf.counts.ipv4, tf.counts.domains, tf.counts.malformed), (1, 1, 0));
        assert!(tf.contains_ip(ip("192.0.2.10")));
        // A short row is malformed.
        let short = IocSet::parse("first,domain\nonly-one-field\n");
        assert_eq!(short.counts.malformed, 1);
        assert_eq!(short.malformed[0].0, 2);
    }

    #[test]
    fn ranges_merge_and_edges() {
        let set = IocSet::parse("0.0.0.0/1\n128.0.0.0/1\n10.0.0.1\n::/0\n");
        assert!(set.contains_ip(ip("255.255.255.255")) && set.contains_ip(ip("0.0.0.0")));
        assert_eq!(set.v4, [(0, u32::MAX)], "overlapping and adjacent ranges merged");
        assert!(set.contains_ip(ip("ffff::1")));
        let set = IocSet::parse("10.0.0.5/24\n10.0.2.0/24\n");
        assert_eq!(set.v4.len(), 2);
        assert!(set.contains_ip(ip("10.0.0.200")) && !set.contains_ip(ip("10.0.1.1")));
        assert_eq!(IocSet::parse("1.2.3.4/8x\n").counts.malformed, 1);
        assert!(classify("::ffff:1.2.3.4/96").is_none(), "an IPv4-mapped CIDR is not guessed at");
        assert!(domain("1.2.3").is_none() && domain("-a.com").is_none() && domain("a..com").is_none());
        assert_eq!(domain("*.Evil.COM").as_deref(), Some("evil.com"));
    }

    #[test]
    fn csv_splitting() {
        assert_eq!(split_csv(r#""a,b",c,"d""e""#), ["a,b", "c", "d\"e"]);
        assert_eq!(split_csv("a,,b"), ["a", "", "b"]);
    }
}
