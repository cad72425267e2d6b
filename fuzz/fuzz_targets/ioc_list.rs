//! IoC lists (plain lists, hosts files, feeds' CSV): any text loads; what
//! cannot be read is counted as malformed, never a panic; every address it
//! lists is found again.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shrike::detect::ioc::list::IocSet;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let set = IocSet::parse(&text);
    // A line that is one address alone is found in the set built from it.
    for line in text.lines() {
        if let Ok(ip) = line.trim().parse::<std::net::IpAddr>() {
            let one = IocSet::parse(line);
            assert!(one.contains_ip(ip), "{line:?} listed {ip} but the set does not hold it");
        }
    }
    let _ = set.contains_domain("example.com");
});
