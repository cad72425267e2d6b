//! The one field table: which Sigma fields Shrike feeds for each logsource
//! category, and how each is read from an enriched [`Event`]. Live events and
//! recorded ones (`shrike rules test`, turned back into [`Event`]s by
//! `record.rs`) both go through [`View`], so a rule sees the same values.
//!
//! A [`View`] borrows the event (and the command lines the engine keeps), so
//! looking a field up never allocates; addresses are formatted once per event
//! into inline buffers.

use std::{borrow::Cow, cell::OnceCell, fmt::Write as _, net::IpAddr};

use rsigma_eval::EventValue;

use crate::events::{Body, Event, Sock};

/// The logsource categories Shrike feeds (`product: linux`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Category {
    /// `process_creation`: successful execs. A failed exec created no
    /// process and ran no image, so it is not one (Sysmon for Linux and
    /// auditd-based pipelines report the same).
    Process,
    /// `network_connection`: connect (Initiated "true") and accept
    /// (Initiated "false") events, whatever their outcome. A non-blocking
    /// connect is one connection: its `in_progress` event counts, the later
    /// event with its outcome does not (it would fire the rules twice).
    Network,
    /// `file_event`: a file created or written (Sysmon's FileCreate: created
    /// or overwritten): `file` events of operation create, write, link and
    /// symlink (the new link), successful ones. A rename is `file_rename`'s.
    FileEvent,
    /// `file_delete`: successful deletes (unlink, rmdir).
    FileDelete,
    /// `file_rename`: successful renames (`SourceFilename` the old name,
    /// `TargetFilename` the new one). Sigma's `file_change` (a file's
    /// creation time changed) is not fed: Shrike does not watch timestamps.
    FileRename,
    /// `sdk`: events other programs report through the SDK socket, one
    /// Sigma event per payload item: `Name`, `EventType`, `Category`, the
    /// sender's `Image`, `User` and `ProcessId`, then every field of the
    /// item by its name and `ExtraDetails.KEY` (any field name is allowed:
    /// the kinds are the senders').
    Sdk,
}

/// The fields every `sdk` event has (the payload's come on top).
pub const SDK_FIELDS: &[&str] = &["Name", "EventType", "Category", "Image", "User", "ProcessId"];

/// Fields of the file categories (`file_rename` adds `SourceFilename`).
pub const FILE_FIELDS: &[&str] = &["TargetFilename", "Image", "CommandLine", "User", "ProcessId"];
pub const FILE_RENAME_FIELDS: &[&str] =
    &["TargetFilename", "SourceFilename", "Image", "CommandLine", "User", "ProcessId"];

/// Fields of `process_creation`, Sysmon for Linux's names.
pub const PROCESS_FIELDS: &[&str] = &[
    "Image",
    "CommandLine",
    "ParentImage",
    "ParentCommandLine",
    "User",
    "LogonId",
    "CurrentDirectory",
    "ProcessId",
    "ParentProcessId",
];

/// Fields of `network_connection`.
pub const NETWORK_FIELDS: &[&str] = &[
    "Image",
    "CommandLine",
    "User",
    "ProcessId",
    "DestinationIp",
    "DestinationPort",
    "DestinationHostname",
    "SourceIp",
    "SourcePort",
    "Initiated",
    "Protocol",
];

impl Category {
    pub const ALL: [Category; 6] = [
        Category::Process,
        Category::Network,
        Category::FileEvent,
        Category::FileDelete,
        Category::FileRename,
        Category::Sdk,
    ];

    /// The logsource `category` value.
    pub fn name(self) -> &'static str {
        match self {
            Category::Process => "process_creation",
            Category::Network => "network_connection",
            Category::FileEvent => "file_event",
            Category::FileDelete => "file_delete",
            Category::FileRename => "file_rename",
            Category::Sdk => "sdk",
        }
    }

    pub fn from_name(s: &str) -> Option<Category> {
        Category::ALL.into_iter().find(|c| c.name().eq_ignore_ascii_case(s))
    }

    pub fn fields(self) -> &'static [&'static str] {
        match self {
            Category::Process => PROCESS_FIELDS,
            Category::Network => NETWORK_FIELDS,
            Category::FileEvent | Category::FileDelete => FILE_FIELDS,
            Category::FileRename => FILE_RENAME_FIELDS,
            Category::Sdk => SDK_FIELDS,
        }
    }

    /// The category an event feeds, if any.
    pub fn of(ev: &Event) -> Option<Category> {
        match &ev.body {
            Body::Exec(x) if x.success => Some(Category::Process),
            Body::Connect(s) if !s.async_outcome => Some(Category::Network),
            Body::Accept(_) => Some(Category::Network),
            Body::File(f) if f.success => match f.operation {
                "create" | "write" | "link" | "symlink" => Some(Category::FileEvent),
                "delete" => Some(Category::FileDelete),
                "rename" => Some(Category::FileRename),
                _ => None,
            },
            Body::Sdk(_) => Some(Category::Sdk),
            _ => None,
        }
    }
}

/// An address formatted without allocating (an IPv6 address is at most 45
/// characters).
#[derive(Clone, Copy)]
pub struct IpText {
    buf: [u8; 48],
    len: u8,
}

impl IpText {
    fn new(ip: IpAddr) -> IpText {
        let mut t = IpText { buf: [0; 48], len: 0 };
        // The mapped form of an IPv4 address is written as IPv4: rules and
        // CIDRs name IPv4 addresses that way, whatever socket family carried them.
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        let _ = write!(t, "{ip}");
        t
    }

    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.buf[..self.len as usize]).unwrap_or("")
    }
}

impl std::fmt::Write for IpText {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let start = self.len as usize;
        let end = start + s.len();
        if end > self.buf.len() {
            return Err(std::fmt::Error);
        }
        self.buf[start..end].copy_from_slice(s.as_bytes());
        self.len = end as u8;
        Ok(())
    }
}

/// One event as a Sigma rule sees it (rsigma's [`rsigma_eval::Event`]).
pub struct View<'a> {
    ev: &'a Event,
    cat: Category,
    cmdline: Option<&'a str>,
    parent_cmdline: Option<&'a str>,
    net: Option<Net<'a>>,
    /// `sdk`: the payload item at hand.
    item: Option<&'a serde_json::Map<String, serde_json::Value>>,
}

/// A connection's sides as Sysmon names them: the source initiated it.
/// Addresses are formatted when a rule first asks for them.
struct Net<'a> {
    sock: &'a Sock,
    initiated: bool,
    src_ip: OnceCell<Option<IpText>>,
    dst_ip: OnceCell<Option<IpText>>,
}

impl Net<'_> {
    fn src(&self) -> Option<IpAddr> {
        if self.initiated { self.sock.local_addr } else { self.sock.remote_addr }
    }

    fn dst(&self) -> Option<IpAddr> {
        if self.initiated { self.sock.remote_addr } else { self.sock.local_addr }
    }
}

impl<'a> View<'a> {
    /// `cmdline`: the process's command line (an exec's own argv joined; for
    /// a connection, the one the engine remembers for the pid);
    /// `parent_cmdline`: the parent's, when known. `None` for an event of no
    /// category.
    pub fn new(ev: &'a Event, cmdline: Option<&'a str>, parent_cmdline: Option<&'a str>) -> Option<View<'a>> {
        let cat = Category::of(ev)?;
        let net = match &ev.body {
            Body::Connect(s) => {
                Some(Net { sock: s, initiated: true, src_ip: OnceCell::new(), dst_ip: OnceCell::new() })
            }
            Body::Accept(s) => {
                Some(Net { sock: s, initiated: false, src_ip: OnceCell::new(), dst_ip: OnceCell::new() })
            }
            _ => None,
        };
        Some(View { ev, cat, cmdline, parent_cmdline, net, item: None })
    }

    /// One payload item of an `sdk` event.
    pub fn sdk(ev: &'a Event, item: &'a serde_json::Map<String, serde_json::Value>) -> View<'a> {
        View { ev, cat: Category::Sdk, cmdline: None, parent_cmdline: None, net: None, item: Some(item) }
    }

    /// An `sdk` event's own fields, then its item's.
    fn sdk_field(&self, name: &str) -> Option<EventValue<'_>> {
        use serde_json::Value;
        let Body::Sdk(sdk) = &self.ev.body else { return None };
        let s = |v: &'a str| Some(EventValue::Str(Cow::Borrowed(v)));
        match name {
            "Name" => return Some(EventValue::Str(Cow::Borrowed(sdk.event.name()))),
            "EventType" => return s(sdk_event_type(sdk.event.event_type())),
            "Category" => {
                return s(match sdk.event.category() {
                    shrike_common::schema::Category::Triggered => "Triggered",
                    shrike_common::schema::Category::Periodic => "Periodic",
                });
            }
            _ => {}
        }
        let item = self.item?;
        let v = match name.strip_prefix("ExtraDetails.") {
            Some(key) => item.get("ExtraDetails")?.get(key)?,
            None => item.get(name)?,
        };
        match v {
            Value::String(t) => Some(EventValue::Str(Cow::Borrowed(t))),
            Value::Bool(b) => Some(EventValue::Bool(*b)),
            Value::Number(n) => n.as_i64().map(EventValue::Int).or_else(|| n.as_f64().map(EventValue::Float)),
            _ => None,
        }
    }

    pub fn category(&self) -> Category {
        self.cat
    }

    /// The value of one field of the table (`None`: absent for this event).
    pub fn field(&self, name: &str) -> Option<EventValue<'_>> {
        let ev = self.ev;
        // Kernel text escapes its backslashes (`\\`): rules see one.
        let s = |v: &'a str| Some(EventValue::Str(crate::events::text::matchable(v)));
        if self.cat == Category::Sdk && !matches!(name, "Image" | "User" | "ProcessId") {
            return self.sdk_field(name);
        }
        match (self.cat, name) {
            (_, "Image") => match &ev.body {
                // The path the kernel executed (the process table's exe for
                // an exec is that path; the filename when it could not say).
                Body::Exec(x) => s(ev.exe.as_deref().unwrap_or(&x.filename)),
                _ => ev.exe.as_deref().and_then(s),
            },
            (_, "CommandLine") => self.cmdline.and_then(s),
            (_, "User") => ev.user.as_deref().and_then(s),
            (_, "ProcessId") => Some(EventValue::Int(i64::from(ev.pid))),
            (Category::Process, "ParentImage") => match &ev.body {
                Body::Exec(x) => x.parent_exe.as_deref().and_then(s),
                _ => None,
            },
            (Category::Process, "ParentCommandLine") => self.parent_cmdline.and_then(s),
            // Shrike has no login session id; the uid is what Sysmon for
            // Linux's LogonId carries for processes outside a login session.
            (Category::Process, "LogonId") => Some(EventValue::Int(i64::from(ev.uid))),
            // The exec record carries no working directory: absent.
            (Category::Process, "CurrentDirectory") => None,
            (Category::Process, "ParentProcessId") => ev.ppid.map(|p| EventValue::Int(i64::from(p))),
            (Category::FileEvent | Category::FileDelete | Category::FileRename, "TargetFilename") => {
                match &ev.body {
                    Body::File(f) => f.new_path.as_deref().or(Some(f.path.as_str())).and_then(s),
                    _ => None,
                }
            }
            (Category::FileRename, "SourceFilename") => match &ev.body {
                Body::File(f) => s(&f.path),
                _ => None,
            },
            (Category::Network, _) => {
                let n = self.net.as_ref()?;
                let (src_port, dst_port) = if n.initiated {
                    (n.sock.local_port, n.sock.remote_port)
                } else {
                    (n.sock.remote_port, n.sock.local_port)
                };
                match name {
                    "DestinationIp" => n
                        .dst_ip
                        .get_or_init(|| n.dst().map(IpText::new))
                        .as_ref()
                        .map(|t| EventValue::Str(Cow::Borrowed(t.as_str()))),
                    "SourceIp" => n
                        .src_ip
                        .get_or_init(|| n.src().map(IpText::new))
                        .as_ref()
                        .map(|t| EventValue::Str(Cow::Borrowed(t.as_str()))),
                    "DestinationPort" => dst_port.map(|p| EventValue::Int(i64::from(p))),
                    "SourcePort" => src_port.map(|p| EventValue::Int(i64::from(p))),
                    "Initiated" => s(if n.initiated { "true" } else { "false" }),
                    "Protocol" => s(n.sock.protocol),
                    // No name resolution is recorded with the connection yet.
                    "DestinationHostname" => None,
                    _ => None,
                }
            }
            _ => None,
        }
    }

    /// Every field of the category with a value, in table order (an `sdk`
    /// event's payload fields after them).
    fn each(&self, mut f: impl FnMut(&str, EventValue<'_>)) {
        for name in self.cat.fields() {
            if let Some(v) = self.field(name) {
                f(name, v);
            }
        }
        for k in self.item.iter().flat_map(|m| m.keys()).filter(|k| *k != "ExtraDetails") {
            if let Some(v) = self.sdk_field(k) {
                f(k, v);
            }
        }
    }
}

fn sdk_event_type(t: shrike_common::schema::EventType) -> &'static str {
    match t {
        shrike_common::schema::EventType::Security => "Security",
        shrike_common::schema::EventType::Operational => "Operational",
        shrike_common::schema::EventType::Diagnostic => "Diagnostic",
    }
}

fn value_str<'v>(v: &'v EventValue<'_>) -> Option<&'v str> {
    match v {
        EventValue::Str(s) => Some(s),
        _ => None,
    }
}

impl rsigma_eval::Event for View<'_> {
    fn get_field(&self, path: &str) -> Option<EventValue<'_>> {
        self.field(path)
    }

    /// Keyword (field-less) detections look at every string value.
    fn any_string_value(&self, pred: &dyn Fn(&str) -> bool) -> bool {
        let mut hit = false;
        self.each(|_, v| {
            if !hit && let Some(s) = value_str(&v) {
                hit = pred(s);
            }
        });
        hit
    }

    fn all_string_values(&self) -> Vec<Cow<'_, str>> {
        let mut out = Vec::new();
        self.each(|_, v| {
            if let Some(s) = value_str(&v) {
                out.push(Cow::Owned(s.to_owned()));
            }
        });
        out
    }

    fn visit_string_values(&self, visit: &mut dyn FnMut(&str)) {
        self.each(|_, v| {
            if let Some(s) = value_str(&v) {
                visit(s);
            }
        });
    }

    /// Only off the hot path (correlation event buffers, which are off).
    fn to_json(&self) -> serde_json::Value {
        let mut m = serde_json::Map::new();
        self.each(|k, v| {
            m.insert(k.to_owned(), v.to_json());
        });
        serde_json::Value::Object(m)
    }

    /// "Shape unknown": the candidate index then probes the fields its rules
    /// use (a handful) instead of looking up each of ours by name (measured:
    /// cheaper on both categories).
    fn visit_top_level_keys(&self, _visit: &mut dyn FnMut(&str)) -> bool {
        false
    }
}
