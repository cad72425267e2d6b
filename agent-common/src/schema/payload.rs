//! Payload items, one type per kind. Field names, types and required-ness follow
//! the published Azure schema (`messageEvent*_v1_0.json`); required fields are
//! plain fields, optional ones are `Option`s (left out of the JSON when `None`).
//! Addresses are [`IpAddr`], so they are always valid IPv4/IPv6 text. Ports are
//! strings, as in the schema ("22", "53248-53250", "*").

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use super::{ExtraDetails, Merge, Uuid};

/// Protocol names as the Azure agents write them.
pub mod protocol {
    pub const TCP: &str = "TCP";
    pub const UDP: &str = "UDP";
    pub const ICMP: &str = "ICMP";
}

macro_rules! payload_items {
    ($(
        $(#[$smeta:meta])*
        pub struct $name:ident {
            $( $(#[$fmeta:meta])* pub $field:ident : $ty:ty, )*
        }
    )*) => {
        $(
            $(#[$smeta])*
            #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
            #[serde(deny_unknown_fields)]
            pub struct $name {
                $( $(#[$fmeta])* pub $field: $ty, )*
            }

            impl Merge for $name {
                fn merge(&mut self, other: &Self) -> bool {
                    let mut ok = true;
                    $( ok &= Merge::merge(&mut self.$field, &other.$field); )*
                    ok
                }

                fn compatible(&self, other: &Self) -> bool {
                    true $( && Merge::compatible(&self.$field, &other.$field) )*
                }

                fn differing_required(&self, other: &Self, out: &mut Vec<&'static str>) {
                    $(
                        if <$ty as Merge>::REQUIRED && self.$field != other.$field {
                            out.push(stringify!($field));
                        }
                    )*
                }
            }
        )*
    };
}

payload_items! {
    /// `ProcessCreate` (Triggered, Security): a process started (an exec).
    pub struct ProcessCreate {
        /// Full path of the executable.
        #[serde(rename = "Executable")]
        pub executable: String,
        #[serde(rename = "ProcessId")]
        pub process_id: u32,
        #[serde(rename = "ParentProcessId")]
        pub parent_process_id: u32,
        /// The (numeric) user id, as text.
        #[serde(rename = "UserId")]
        pub user_id: String,
        #[serde(rename = "UserName", default, skip_serializing_if = "Option::is_none")]
        pub user_name: Option<String>,
        /// Executable and arguments.
        #[serde(rename = "CommandLine")]
        pub command_line: String,
        #[serde(rename = "ExtraDetails", default, skip_serializing_if = "ExtraDetails::is_empty")]
        pub extra_details: ExtraDetails,
    }

    /// `ProcessTerminate` (Triggered, Security): a process exited.
    pub struct ProcessTerminate {
        #[serde(rename = "Executable")]
        pub executable: String,
        #[serde(rename = "ProcessId")]
        pub process_id: u32,
        #[serde(rename = "ExitStatus")]
        pub exit_status: i32,
        #[serde(rename = "ExtraDetails", default, skip_serializing_if = "ExtraDetails::is_empty")]
        pub extra_details: ExtraDetails,
    }

    /// `ConnectionCreate` (Triggered, Security): an outbound connect or an
    /// accepted inbound connection.
    pub struct ConnectionCreate {
        #[serde(rename = "RemoteAddress")]
        pub remote_address: IpAddr,
        #[serde(rename = "RemotePort")]
        pub remote_port: String,
        #[serde(rename = "LocalAddress", default, skip_serializing_if = "Option::is_none")]
        pub local_address: Option<IpAddr>,
        #[serde(rename = "LocalPort", default, skip_serializing_if = "Option::is_none")]
        pub local_port: Option<String>,
        #[serde(rename = "Direction")]
        pub direction: Direction,
        /// [`protocol::TCP`], [`protocol::UDP`]...
        #[serde(rename = "Protocol")]
        pub protocol: String,
        #[serde(rename = "ProcessId")]
        pub process_id: u32,
        #[serde(rename = "UserId", default, skip_serializing_if = "Option::is_none")]
        pub user_id: Option<String>,
        #[serde(rename = "Executable")]
        pub executable: String,
        #[serde(rename = "CommandLine", default, skip_serializing_if = "Option::is_none")]
        pub command_line: Option<String>,
        #[serde(rename = "ExtraDetails", default, skip_serializing_if = "ExtraDetails::is_empty")]
        pub extra_details: ExtraDetails,
    }

    /// `Login` (Triggered, Security): a login attempt. At least one of
    /// `UserId` and `UserName` must be present.
    pub struct Login {
        #[serde(rename = "ProcessId")]
        pub process_id: u32,
        #[serde(rename = "UserId", default, skip_serializing_if = "Option::is_none")]
        pub user_id: Option<String>,
        #[serde(rename = "UserName", default, skip_serializing_if = "Option::is_none")]
        pub user_name: Option<String>,
        /// What handled the attempt, e.g. "PAM:authenticate".
        #[serde(rename = "Operation")]
        pub operation: String,
        #[serde(rename = "Executable")]
        pub executable: String,
        #[serde(rename = "RemoteAddress", default, skip_serializing_if = "Option::is_none")]
        pub remote_address: Option<IpAddr>,
        #[serde(rename = "RemotePort", default, skip_serializing_if = "Option::is_none")]
        pub remote_port: Option<String>,
        #[serde(rename = "LocalPort", default, skip_serializing_if = "Option::is_none")]
        pub local_port: Option<String>,
        #[serde(rename = "Result")]
        pub result: Outcome,
        #[serde(rename = "ExtraDetails", default, skip_serializing_if = "ExtraDetails::is_empty")]
        pub extra_details: ExtraDetails,
    }

    /// `ListeningPorts` (Periodic, Security): one listening socket.
    pub struct ListeningPorts {
        #[serde(rename = "LocalPort")]
        pub local_port: String,
        #[serde(rename = "Protocol")]
        pub protocol: String,
        #[serde(rename = "LocalAddress", default, skip_serializing_if = "Option::is_none")]
        pub local_address: Option<IpAddr>,
        #[serde(rename = "RemoteAddress", default, skip_serializing_if = "Option::is_none")]
        pub remote_address: Option<IpAddr>,
        #[serde(rename = "RemotePort", default, skip_serializing_if = "Option::is_none")]
        pub remote_port: Option<String>,
        #[serde(rename = "ExtraDetails", default, skip_serializing_if = "ExtraDetails::is_empty")]
        pub extra_details: ExtraDetails,
    }

    /// `LocalUsers` (Periodic, Security): one local account. Group lists are
    /// joined with `;` (see [`LocalUsers::join`]).
    pub struct LocalUsers {
        #[serde(rename = "UserName")]
        pub user_name: String,
        #[serde(rename = "UserId")]
        pub user_id: String,
        #[serde(rename = "GroupNames")]
        pub group_names: String,
        #[serde(rename = "GroupIds")]
        pub group_ids: String,
        #[serde(rename = "ExtraDetails", default, skip_serializing_if = "ExtraDetails::is_empty")]
        pub extra_details: ExtraDetails,
    }

    /// `SystemInformation` (Periodic, Security). Every field is optional.
    #[derive(Default)]
    pub struct SystemInformation {
        #[serde(rename = "OSName", default, skip_serializing_if = "Option::is_none")]
        pub os_name: Option<String>,
        #[serde(rename = "OSVersion", default, skip_serializing_if = "Option::is_none")]
        pub os_version: Option<String>,
        #[serde(rename = "OSVendor", default, skip_serializing_if = "Option::is_none")]
        pub os_vendor: Option<String>,
        #[serde(rename = "OsArchitecture", default, skip_serializing_if = "Option::is_none")]
        pub os_architecture: Option<String>,
        #[serde(rename = "HostName", default, skip_serializing_if = "Option::is_none")]
        pub host_name: Option<String>,
        #[serde(rename = "BIOSVersion", default, skip_serializing_if = "Option::is_none")]
        pub bios_version: Option<String>,
        #[serde(rename = "BootDevice", default, skip_serializing_if = "Option::is_none")]
        pub boot_device: Option<String>,
        #[serde(rename = "TotalPhysicalMemoryInKB", default, skip_serializing_if = "Option::is_none")]
        pub total_physical_memory_kb: Option<u64>,
        #[serde(rename = "FreePhysicalMemoryInKB", default, skip_serializing_if = "Option::is_none")]
        pub free_physical_memory_kb: Option<u64>,
        #[serde(rename = "TotalVirtualMemoryInKB", default, skip_serializing_if = "Option::is_none")]
        pub total_virtual_memory_kb: Option<u64>,
        #[serde(rename = "FreeVirtualMemoryInKB", default, skip_serializing_if = "Option::is_none")]
        pub free_virtual_memory_kb: Option<u64>,
        #[serde(rename = "ExtraDetails", default, skip_serializing_if = "ExtraDetails::is_empty")]
        pub extra_details: ExtraDetails,
    }

    /// `FirewallConfiguration` (Periodic, Security): one firewall rule.
    /// Addresses here are IPs or tags ("Local subnet", "10.0.0.0/8"), so text.
    pub struct FirewallConfiguration {
        #[serde(rename = "Priority", default, skip_serializing_if = "Option::is_none")]
        pub priority: Option<i64>,
        #[serde(rename = "Direction", default, skip_serializing_if = "Option::is_none")]
        pub direction: Option<Direction>,
        #[serde(rename = "ChainName", default, skip_serializing_if = "Option::is_none")]
        pub chain_name: Option<String>,
        #[serde(rename = "Application", default, skip_serializing_if = "Option::is_none")]
        pub application: Option<String>,
        #[serde(rename = "Enabled")]
        pub enabled: bool,
        #[serde(rename = "Action")]
        pub action: FirewallAction,
        #[serde(rename = "SourceAddress", default, skip_serializing_if = "Option::is_none")]
        pub source_address: Option<String>,
        #[serde(rename = "SourcePort", default, skip_serializing_if = "Option::is_none")]
        pub source_port: Option<String>,
        #[serde(rename = "DestinationAddress", default, skip_serializing_if = "Option::is_none")]
        pub destination_address: Option<String>,
        #[serde(rename = "DestinationPort", default, skip_serializing_if = "Option::is_none")]
        pub destination_port: Option<String>,
        #[serde(rename = "Protocol", default, skip_serializing_if = "Option::is_none")]
        pub protocol: Option<String>,
        #[serde(rename = "ExtraDetails", default, skip_serializing_if = "ExtraDetails::is_empty")]
        pub extra_details: ExtraDetails,
    }

    /// `OSBaseline` (Periodic, Security): one baseline rule's result.
    pub struct OSBaseline {
        #[serde(rename = "Description")]
        pub description: String,
        #[serde(rename = "CceId")]
        pub cce_id: String,
        #[serde(rename = "Result")]
        pub result: BaselineResult,
        #[serde(rename = "Error")]
        pub error: String,
        #[serde(rename = "Severity")]
        pub severity: BaselineSeverity,
        #[serde(rename = "ExtraDetails", default, skip_serializing_if = "ExtraDetails::is_empty")]
        pub extra_details: ExtraDetails,
    }

    /// `ConnectedHardware` (Periodic, Security): one device.
    pub struct ConnectedHardware {
        #[serde(rename = "HardwareCategory")]
        pub hardware_category: String,
        #[serde(rename = "HardwareSubCategory")]
        pub hardware_sub_category: String,
        #[serde(rename = "HardwareName")]
        pub hardware_name: String,
        #[serde(rename = "ExtraDetails", default, skip_serializing_if = "ExtraDetails::is_empty")]
        pub extra_details: ExtraDetails,
    }

    /// `Diagnostic` (Triggered, Diagnostic): the agent's own log line.
    pub struct Diagnostic {
        #[serde(rename = "CorrelationId", default, skip_serializing_if = "Option::is_none")]
        pub correlation_id: Option<Uuid>,
        #[serde(rename = "Severity")]
        pub severity: DiagnosticSeverity,
        #[serde(rename = "Message")]
        pub message: String,
        #[serde(rename = "ProcessId")]
        pub process_id: u32,
        #[serde(rename = "ThreadId")]
        pub thread_id: u32,
        #[serde(rename = "ExtraDetails", default, skip_serializing_if = "ExtraDetails::is_empty")]
        pub extra_details: ExtraDetails,
    }

    /// `ConfigurationError` (Triggered, Operational): a setting the agent could
    /// not apply as given, and what it used instead.
    pub struct ConfigurationError {
        #[serde(rename = "ConfigurationName")]
        pub configuration_name: String,
        #[serde(rename = "ErrorType")]
        pub error_type: ConfigurationErrorType,
        #[serde(rename = "UsedConfiguration")]
        pub used_configuration: String,
        #[serde(rename = "Message")]
        pub message: String,
        #[serde(rename = "ExtraDetails", default, skip_serializing_if = "ExtraDetails::is_empty")]
        pub extra_details: ExtraDetails,
    }

    /// `DroppedEventsStatistics` (Periodic, Operational): per priority queue.
    pub struct DroppedEventsStatistics {
        #[serde(rename = "Queue")]
        pub queue: Queue,
        #[serde(rename = "CollectedEvents")]
        pub collected_events: u64,
        #[serde(rename = "DroppedEvents")]
        pub dropped_events: u64,
        #[serde(rename = "ExtraDetails", default, skip_serializing_if = "ExtraDetails::is_empty")]
        pub extra_details: ExtraDetails,
    }

    /// `MessageStatistics` (Periodic, Operational).
    pub struct MessageStatistics {
        #[serde(rename = "MessagesSent")]
        pub messages_sent: u64,
        /// Messages smaller than 4 KB (IoT Hub bills 4 KB blocks).
        #[serde(rename = "MessagesUnder4KB")]
        pub messages_under_4kb: u64,
        #[serde(rename = "TotalFailed")]
        pub total_failed: u64,
        #[serde(rename = "ExtraDetails", default, skip_serializing_if = "ExtraDetails::is_empty")]
        pub extra_details: ExtraDetails,
    }

    /// `FileChange` (Triggered, Security) — **own kind**, not in the Azure
    /// schema: a process changed a file under a watched path (file
    /// integrity: the agent's `file` events).
    pub struct FileChange {
        #[serde(rename = "ProcessId")]
        pub process_id: u32,
        #[serde(rename = "Executable")]
        pub executable: String,
        #[serde(rename = "CommandLine", default, skip_serializing_if = "Option::is_none")]
        pub command_line: Option<String>,
        /// "create", "write", "rename", "delete", "chmod", "chown", "link",
        /// "symlink".
        #[serde(rename = "Operation")]
        pub operation: String,
        /// The file, absolute (rename: the old name; link/symlink: the new link).
        #[serde(rename = "Path")]
        pub path: String,
        /// rename: the new name.
        #[serde(rename = "NewPath", default, skip_serializing_if = "Option::is_none")]
        pub new_path: Option<String>,
        #[serde(rename = "Result")]
        pub result: Outcome,
        #[serde(rename = "UserId")]
        pub user_id: String,
        #[serde(rename = "UserName", default, skip_serializing_if = "Option::is_none")]
        pub user_name: Option<String>,
        #[serde(rename = "ExtraDetails", default, skip_serializing_if = "ExtraDetails::is_empty")]
        pub extra_details: ExtraDetails,
    }

    /// `PrivilegeChange` (Triggered, Security) — **own kind**, not in the Azure
    /// schema: a set*uid/set*gid/capset call. `UserId`/`GroupId` are the ids
    /// before the call, `NewUserId`/`NewGroupId` after it.
    pub struct PrivilegeChange {
        #[serde(rename = "ProcessId")]
        pub process_id: u32,
        #[serde(rename = "Executable")]
        pub executable: String,
        #[serde(rename = "CommandLine", default, skip_serializing_if = "Option::is_none")]
        pub command_line: Option<String>,
        /// The call: "setuid", "setresgid", "capset"...
        #[serde(rename = "Operation")]
        pub operation: String,
        #[serde(rename = "Result")]
        pub result: Outcome,
        #[serde(rename = "UserId")]
        pub user_id: String,
        #[serde(rename = "UserName", default, skip_serializing_if = "Option::is_none")]
        pub user_name: Option<String>,
        #[serde(rename = "GroupId", default, skip_serializing_if = "Option::is_none")]
        pub group_id: Option<String>,
        #[serde(rename = "NewUserId", default, skip_serializing_if = "Option::is_none")]
        pub new_user_id: Option<String>,
        #[serde(rename = "NewGroupId", default, skip_serializing_if = "Option::is_none")]
        pub new_group_id: Option<String>,
        #[serde(rename = "ExtraDetails", default, skip_serializing_if = "ExtraDetails::is_empty")]
        pub extra_details: ExtraDetails,
    }

    /// `Alert` (Triggered, Security) — **own kind**, not in the Azure schema:
    /// a local detection rule fired.
    pub struct Alert {
        /// Stable rule identifier, e.g. "exec-from-tmp".
        #[serde(rename = "RuleId")]
        pub rule_id: String,
        #[serde(rename = "Severity")]
        pub severity: AlertSeverity,
        /// What raised it: "builtin" or "sigma".
        #[serde(rename = "Source", default, skip_serializing_if = "Option::is_none")]
        pub source: Option<String>,
        /// One line for humans.
        #[serde(rename = "Title")]
        pub title: String,
        #[serde(rename = "Description", default, skip_serializing_if = "Option::is_none")]
        pub description: Option<String>,
        /// What to do about it.
        #[serde(rename = "Remediation", default, skip_serializing_if = "Option::is_none")]
        pub remediation: Option<String>,
        /// ATT&CK and other tags ("attack.t1059.004").
        #[serde(rename = "Tags", default, skip_serializing_if = "Vec::is_empty")]
        pub tags: Vec<String>,
        #[serde(rename = "ProcessId", default, skip_serializing_if = "Option::is_none")]
        pub process_id: Option<u32>,
        #[serde(rename = "Executable", default, skip_serializing_if = "Option::is_none")]
        pub executable: Option<String>,
        #[serde(rename = "CommandLine", default, skip_serializing_if = "Option::is_none")]
        pub command_line: Option<String>,
        #[serde(rename = "UserId", default, skip_serializing_if = "Option::is_none")]
        pub user_id: Option<String>,
        #[serde(rename = "UserName", default, skip_serializing_if = "Option::is_none")]
        pub user_name: Option<String>,
        #[serde(rename = "RemoteAddress", default, skip_serializing_if = "Option::is_none")]
        pub remote_address: Option<IpAddr>,
        #[serde(rename = "RemotePort", default, skip_serializing_if = "Option::is_none")]
        pub remote_port: Option<String>,
        #[serde(rename = "ExtraDetails", default, skip_serializing_if = "ExtraDetails::is_empty")]
        pub extra_details: ExtraDetails,
    }

    /// `Heartbeat` (Periodic, Operational) — **own kind**: the agent is
    /// alive, sent every heartbeat interval at high priority whether or not
    /// anything happened, so the hub tells a silent device (gone, cut off)
    /// from a quiet one.
    pub struct Heartbeat {
        /// Seconds since the agent started.
        #[serde(rename = "UptimeSeconds")]
        pub uptime_seconds: u64,
        /// The next heartbeat is due this many seconds later: a hub may call
        /// the device silent after two intervals without one.
        #[serde(rename = "IntervalSeconds")]
        pub interval_seconds: u64,
        /// SHA-256 of the remote configuration document applied, if any.
        #[serde(rename = "ConfigurationSha256", default, skip_serializing_if = "Option::is_none")]
        pub configuration_sha256: Option<String>,
        #[serde(rename = "ExtraDetails", default, skip_serializing_if = "ExtraDetails::is_empty")]
        pub extra_details: ExtraDetails,
    }
}

impl LocalUsers {
    /// Joins group names or ids the way the schema wants them: `a;b;c`.
    pub fn join<I, S>(items: I) -> String
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut out = String::new();
        for (i, s) in items.into_iter().enumerate() {
            if i > 0 {
                out.push(';');
            }
            out.push_str(s.as_ref());
        }
        out
    }
}

macro_rules! value_enums {
    ($($(#[$meta:meta])* pub enum $name:ident { $($variant:ident),* $(,)? })*) => {
        $(
            $(#[$meta])*
            #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
            pub enum $name {
                $($variant,)*
            }

            impl $name {
                /// The value as it appears in the JSON.
                pub const fn as_str(self) -> &'static str {
                    match self {
                        $($name::$variant => stringify!($variant),)*
                    }
                }
            }

            /// A value of this kind is part of what identifies a hit: hits
            /// that differ in it are not merged.
            impl Merge for $name {
                fn merge(&mut self, other: &Self) -> bool {
                    self == other
                }

                fn compatible(&self, other: &Self) -> bool {
                    self == other
                }
            }
        )*
    };
}

value_enums! {
    /// `Direction` of a connection (and of a firewall rule).
    pub enum Direction { In, Out }
    /// `Result` of a login or privilege change.
    pub enum Outcome { Success, Fail }
    /// `Severity` of a [`Diagnostic`].
    pub enum DiagnosticSeverity { Fatal, Error, Warning, Information, Debug }
    /// `ErrorType` of a [`ConfigurationError`].
    pub enum ConfigurationErrorType { TypeMismatch, NotOptimal, Conflict }
    /// `Queue` of [`DroppedEventsStatistics`].
    pub enum Queue { High, Low }
    /// `Action` of a firewall rule (`Other`: details in ExtraDetails).
    pub enum FirewallAction { Allow, Deny, Other }
    /// `Result` of an [`OSBaseline`] rule (`Err`: the check itself failed).
    pub enum BaselineResult { Pass, Fail, Err }
    /// `Severity` of an [`OSBaseline`] rule.
    pub enum BaselineSeverity { Critical, Important, Warning, Informational }
    /// `Severity` of an [`Alert`].
    pub enum AlertSeverity { Critical, High, Medium, Low, Informational }
}

impl Outcome {
    pub fn from_success(success: bool) -> Outcome {
        if success { Outcome::Success } else { Outcome::Fail }
    }
}
