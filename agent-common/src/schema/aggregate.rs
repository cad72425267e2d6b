//! Event aggregation, as the Azure IoT security agents do it: many hits of the
//! same thing become one event with one payload item, whose `ExtraDetails` say
//! how many hits there were and over which period. A field whose values
//! differ between the hits is left out where the kind allows it (optional
//! fields, `ExtraDetails` entries); a required one keeps a zero value and
//! is named in `ExtraDetails.MergedFields`, so nobody reads that zero as a
//! value.
//!
//! Which hits belong together (the aggregation key) is the caller's choice;
//! [`Aggregate`] only refuses to merge hits whose enumerated fields
//! (`Direction`, `Result`, `Severity`...) differ, since no zero value exists
//! for them.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use chrono::{DateTime, Utc};

use super::{Event, ExtraDetails, PayloadItem, Uuid, event};

/// `ExtraDetails` key: number of merged hits.
pub const HIT_COUNT: &str = "HitCount";
/// `ExtraDetails` key: local time of the first hit (RFC 3339).
pub const START_TIME_LOCAL: &str = "StartTimeLocal";
/// `ExtraDetails` key: UTC time of the first hit.
pub const START_TIME_UTC: &str = "StartTimeUtc";
/// `ExtraDetails` key: local time of the last hit.
pub const END_TIME_LOCAL: &str = "EndTimeLocal";
/// `ExtraDetails` key: UTC time of the last hit.
pub const END_TIME_UTC: &str = "EndTimeUtc";
/// `ExtraDetails` key: the required fields (comma-separated, as named in
/// the message: `ProcessId,RemotePort`) whose values differed between the
/// hits: their zero (`0`, `"0"`, `""`, `0.0.0.0`) stands for "several".
pub const MERGED_FIELDS: &str = "MergedFields";

/// Field-wise merge of two hits: `self` keeps what both share. A field whose
/// values differ is left out when it can be (`None` for optional fields; an
/// `ExtraDetails` entry is kept only when both hits have it with one value);
/// a required one becomes its zero: `0` for numbers, `"0"` for text that
/// both hits wrote as an integer (ids, ports), `""` for other text, the
/// unspecified address (`0.0.0.0`, `::`) for addresses (and [`Aggregate`]
/// names it in [`MERGED_FIELDS`]). Returns `false` when the two cannot be
/// merged (an enumerated field differs); `self` may then be partly merged:
/// check [`Merge::compatible`] first, or merge into a copy.
pub trait Merge {
    /// The field must be present: a difference zeroes it instead of
    /// leaving it out.
    const REQUIRED: bool = true;

    fn merge(&mut self, other: &Self) -> bool;

    /// Payload items: the names (Rust, snake_case) of the required fields
    /// whose values differ from `other`'s.
    fn differing_required(&self, _other: &Self, _out: &mut Vec<&'static str>) {}

    /// Whether `merge` would succeed, without changing anything.
    fn compatible(&self, _other: &Self) -> bool {
        true
    }
}

macro_rules! merge_numbers {
    ($($t:ty),*) => {
        $(impl Merge for $t {
            fn merge(&mut self, other: &Self) -> bool {
                if self != other {
                    *self = 0;
                }
                true
            }
        })*
    };
}
merge_numbers!(u16, u32, u64, i32, i64);

impl Merge for String {
    fn merge(&mut self, other: &Self) -> bool {
        if self != other {
            // Already zeroed by an earlier hit: most merges of a differing
            // field end here, without allocating.
            let zeroed = self.is_empty() || (self == "0" && other.parse::<i64>().is_ok());
            if !zeroed {
                *self = zero_text(self, Some(other));
            }
        }
        true
    }
}

/// `process_id` -> `ProcessId`: a payload field's name in the message.
fn pascal_case(snake: &str) -> String {
    snake
        .split('_')
        .map(|w| {
            let mut c = w.chars();
            c.next().map(|f| f.to_ascii_uppercase().to_string() + c.as_str()).unwrap_or_default()
        })
        .collect()
}

/// The zero of a text field: "0" when it is a number, else "".
fn zero_text(a: &str, b: Option<&str>) -> String {
    let numeric = |s: &str| s.parse::<i64>().is_ok();
    if numeric(a) && b.is_none_or(numeric) { "0".into() } else { String::new() }
}

impl Merge for bool {
    fn merge(&mut self, other: &Self) -> bool {
        self == other
    }

    fn compatible(&self, other: &Self) -> bool {
        self == other
    }
}

impl Merge for IpAddr {
    fn merge(&mut self, other: &Self) -> bool {
        if self != other {
            *self = match self {
                IpAddr::V6(_) if other.is_ipv6() => Ipv6Addr::UNSPECIFIED.into(),
                _ => Ipv4Addr::UNSPECIFIED.into(),
            };
        }
        true
    }
}

impl Merge for Uuid {
    fn merge(&mut self, other: &Self) -> bool {
        if self != other {
            *self = Uuid::nil();
        }
        true
    }
}

/// Lists of names (an alert's tags): the names every hit has stay.
impl Merge for Vec<String> {
    fn merge(&mut self, other: &Self) -> bool {
        if self != other {
            self.retain(|s| other.contains(s));
        }
        true
    }
}

impl<T: Merge + PartialEq> Merge for Option<T> {
    const REQUIRED: bool = false;

    fn merge(&mut self, other: &Self) -> bool {
        if let (Some(a), Some(b)) = (self.as_ref(), other)
            && !a.compatible(b)
        {
            return false;
        }
        if self != other {
            *self = None;
        }
        true
    }

    fn compatible(&self, other: &Self) -> bool {
        match (self, other) {
            (Some(a), Some(b)) => a.compatible(b),
            _ => true,
        }
    }
}

/// Entries present in both with the same value stay; the others are left
/// out (differing values, or a key one hit does not have).
impl Merge for ExtraDetails {
    const REQUIRED: bool = false;

    fn merge(&mut self, other: &Self) -> bool {
        self.retain(|key, value| other.get(key) == Some(value));
        true
    }
}

/// Why a hit could not be added to an [`Aggregate`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AggregateError {
    /// The hits differ in an enumerated field (Direction, Result...).
    Incompatible,
}

impl std::fmt::Display for AggregateError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AggregateError::Incompatible => f.write_str(
                "cannot aggregate hits whose enumerated fields (Direction, Result, Severity...) differ",
            ),
        }
    }
}

impl std::error::Error for AggregateError {}

/// Hits of one thing being merged into one payload item.
///
/// ```
/// use shrike_common::schema::{Aggregate, ProcessTerminate, chrono::{TimeZone, Utc}};
/// let hit = |pid| ProcessTerminate {
///     executable: "/usr/bin/true".into(), process_id: pid, exit_status: 0, extra_details: Default::default(),
/// };
/// let t0 = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
/// let mut agg = Aggregate::new(hit(10), t0);
/// agg.add(&hit(11), t0 + chrono::Duration::seconds(5)).unwrap();
/// let event = agg.into_event();
/// // one item: ProcessId 0, ExtraDetails.HitCount "2" and .MergedFields "ProcessId"
/// assert_eq!(event.payload.len(), 1);
/// ```
#[derive(Clone, Debug)]
pub struct Aggregate<T: PayloadItem> {
    item: T,
    /// Required fields whose values differed (zeroed in `item`), sorted.
    merged: Vec<&'static str>,
    hits: u64,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
}

impl<T: PayloadItem> Aggregate<T> {
    /// The first hit, seen at `at` (local time: the system's time zone).
    pub fn new(item: T, at: DateTime<Utc>) -> Self {
        Aggregate { item, merged: Vec::new(), hits: 1, start: at, end: at }
    }

    /// One more hit. On error nothing changes. Merges in place: the hot path
    /// of a repetitive workload compares fields and allocates nothing.
    pub fn add(&mut self, item: &T, at: DateTime<Utc>) -> Result<(), AggregateError> {
        if !self.item.compatible(item) {
            return Err(AggregateError::Incompatible);
        }
        let before = self.merged.len();
        self.item.differing_required(item, &mut self.merged);
        if self.merged.len() != before {
            self.merged.sort_unstable();
            self.merged.dedup();
        }
        let merged = self.item.merge(item);
        debug_assert!(merged, "compatible() and merge() disagree");
        self.hits += 1;
        self.start = self.start.min(at);
        self.end = self.end.max(at);
        Ok(())
    }

    /// One more hit that the caller knows would merge without changing the
    /// item (its fields equal the item's, or differ only where the item is
    /// already zeroed): counts it and its time, without building the item.
    pub fn add_repeat(&mut self, at: DateTime<Utc>) {
        self.hits += 1;
        self.start = self.start.min(at);
        self.end = self.end.max(at);
    }

    pub fn hits(&self) -> u64 {
        self.hits
    }

    /// The merged item so far (without the aggregation keys).
    pub fn item(&self) -> &T {
        &self.item
    }

    /// The merged item with `HitCount`, `StartTime*` and `EndTime*` in its
    /// `ExtraDetails`.
    pub fn into_item(self) -> T {
        let mut item = self.item;
        let extra: &mut ExtraDetails = item.extra_details_mut();
        extra.insert(HIT_COUNT.into(), self.hits.to_string());
        // Local times in the zone's offset of now (they differ from the
        // offset at the hit only across a DST change within the interval).
        extra.insert(START_TIME_LOCAL.into(), event::format_local(&event::local_time(self.start)));
        extra.insert(START_TIME_UTC.into(), event::format_utc(&self.start));
        extra.insert(END_TIME_LOCAL.into(), event::format_local(&event::local_time(self.end)));
        extra.insert(END_TIME_UTC.into(), event::format_utc(&self.end));
        if !self.merged.is_empty() {
            let names: Vec<String> = self.merged.iter().map(|f| pascal_case(f)).collect();
            extra.insert(MERGED_FIELDS.into(), names.join(","));
        }
        item
    }

    /// The aggregated event: a fresh event (new Id, stamped now) whose payload
    /// is the one merged item.
    pub fn into_event(self) -> Event {
        Event::new(T::into_payload(vec![self.into_item()]))
    }
}
