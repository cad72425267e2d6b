//! The SDK socket's line parser (`shrike_common::sdk::parse_line`): any
//! bytes give an event or a reason, never a panic; the reply is one line of
//! JSON; an accepted event, stamped with its sender as the agent does,
//! serializes without a key twice, reads back as the same event, and goes
//! into a message of its family.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shrike_common::{
    schema::{MessageBuilder, Uuid},
    sdk::{Reply, SdkEvent, parse_line},
};

fuzz_target!(|data: &[u8]| {
    let now =
        shrike_common::schema::chrono::DateTime::from_timestamp(1_765_000_000, 0).expect("a valid time");
    let mut ev = match parse_line(data, now) {
        Err(why) => {
            assert!(!why.is_empty());
            let line = Reply::rejected(why).to_line();
            assert_eq!(line.iter().filter(|&&b| b == b'\n').count(), 1, "one reply line");
            let back: Reply = serde_json::from_slice(&line).expect("the reply is JSON");
            assert!(!back.ok);
            return;
        }
        Ok(ev) => ev,
    };
    ev.for_each_extra_details(|d| {
        d.insert("SenderPid".into(), "4242".into());
        d.insert("SenderExecutable".into(), "/usr/bin/x\n\"y\"".into());
    });
    let text = serde_json::to_string(&ev).expect("an event serializes");
    if let Err(e) = shrike_fuzz::check_json_no_duplicates(&text) {
        panic!("{e}: {text}");
    }
    // Read back: the same event (its Id, times, kind and items).
    let again = parse_line(text.as_bytes(), now).unwrap_or_else(|e| panic!("{e}: {text}"));
    assert_eq!(serde_json::to_string(&again).unwrap(), text);
    assert_eq!(again.id(), ev.id());
    // Into a message of its family (large enough for any 64 KiB line).
    let mut b = MessageBuilder::new(Uuid::nil(), "0").with_max_bytes(64 << 20);
    match &ev {
        SdkEvent::Azure(e) => b.push(e).expect("an Azure-kind SDK event joins a message"),
        SdkEvent::Custom(c) => b.push_custom(c).expect("a custom event joins a message"),
    }
    let msg = b.finish().expect("one event");
    if let Err(e) = shrike_fuzz::check_json_no_duplicates(std::str::from_utf8(&msg).unwrap()) {
        panic!("{e}");
    }
});
