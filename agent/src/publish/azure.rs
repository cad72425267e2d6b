//! Azure IoT Hub's side of MQTT: the connection string, the CONNECT client id,
//! user name and password (a SAS token), and the device-to-cloud topic that
//! marks a message as a security message.
//!
//! Sources (checked against each other):
//! - Microsoft, "Communicate with an IoT hub using the MQTT protocol"
//!   (learn.microsoft.com/azure/iot/iot-mqtt-connect-to-iot-hub): ClientId
//!   `{device-id}` or `{device-id}/{module-id}`; Username
//!   `{iotHub-hostname}/{device-id}/?api-version=2021-04-12` (module:
//!   `{hub}/{device_id}/{module_id}/?api-version=2021-04-12`); publish to
//!   `devices/{device-id}/messages/events/{property-bag}` (module:
//!   `devices/{device-id}/modules/{module-id}/messages/events/`), the property
//!   bag being RFC 2396-encoded `name=value` pairs joined by `&`, with
//!   `$.ct=application%2Fjson&$.ce=utf-8` for JSON bodies.
//! - Microsoft, "Control access to IoT Hub with shared access signatures"
//!   (learn.microsoft.com/azure/iot-hub/authenticate-authorize-sas): token
//!   `SharedAccessSignature sr={URL-encoded-resourceURI}&sig={signature}&se={expiry}`,
//!   signature = HMAC-SHA256 keyed with the base64-decoded key over
//!   `{URL-encoded-resourceURI} + "\n" + {expiry}`, resource URI
//!   `{hub}.azure-devices.net/devices/{device id}` (module:
//!   `.../devices/{deviceId}/modules/{moduleId}`), no `skn` for a device key.
//! - Azure IoT C SDK, `iothub_client/src/iothubtransport_mqtt_common.c`
//!   (`addSystemPropertiesTouMqttMessage`): system properties are written
//!   `%24.{name}={URL-encoded value}` in the order ct, ce, then, for a security
//!   message, `%24.ifid` = URL-encoded `urn:azureiot:Security:SecurityAgent:1`
//!   (`SECURITY_INTERFACE_ID_MQTT` "ifid" and `SECURITY_INTERFACE_ID_VALUE` in
//!   `iothub_internal_consts.h`). Microsoft's Azure RTOS security module uses
//!   the same topic: `devices/{id}/messages/events/%24.ct=application%2Fjson&%24.ce=utf-8&%24.ifid=urn%3Aazureiot%3ASecurity%3ASecurityAgent%3A1`.
//!   So property names are encoded too (`$` as `%24`), as the C and Python SDKs do.

use std::{
    fmt,
    str::FromStr,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use base64::{Engine as _, engine::general_purpose::STANDARD as BASE64};
use hmac::{Hmac, KeyInit, Mac};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use sha2::Sha256;

/// The `api-version` IoT Hub's MQTT doc gives for the user name.
pub const API_VERSION: &str = "2021-04-12";
/// IoT Hub's MQTT port (TLS only).
pub const MQTT_PORT: u16 = 8883;
/// The security message interface id, property `$.ifid`.
pub const SECURITY_INTERFACE_ID: &str = "urn:azureiot:Security:SecurityAgent:1";
/// System properties of a security message, in the C SDK's order: content
/// type, content encoding, interface id.
pub const SECURITY_MESSAGE_PROPERTIES: [(&str, &str); 3] =
    [("$.ct", "application/json"), ("$.ce", "utf-8"), ("$.ifid", SECURITY_INTERFACE_ID)];

/// Encodes all but RFC 3986's unreserved characters (`A-Z a-z 0-9 - . _ ~`),
/// upper-case hex: what the SDKs' URL encoders produce for these strings
/// (Python's `urllib.parse.quote(s, safe='')`, JavaScript's `encodeURIComponent`).
const URL_ENCODE: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

/// URL-encodes one component (a property name or value, a resource URI).
pub fn url_encode(s: &str) -> String {
    utf8_percent_encode(s, URL_ENCODE).to_string()
}

/// A property bag for a device-to-cloud topic: `name=value` pairs, both
/// URL-encoded, joined by `&`.
pub fn property_bag(properties: &[(&str, &str)]) -> String {
    let mut out = String::new();
    for (i, (name, value)) in properties.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        out.push_str(&url_encode(name));
        out.push('=');
        out.push_str(&url_encode(value));
    }
    out
}

/// A SAS token for `resource_uri`, signed with `key` (already base64-decoded),
/// valid until `expiry` (seconds since the Unix epoch).
pub fn sas_token(resource_uri: &str, key: &[u8], expiry: u64) -> String {
    let sr = url_encode(resource_uri);
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(sr.as_bytes());
    mac.update(b"\n");
    mac.update(expiry.to_string().as_bytes());
    let sig = BASE64.encode(mac.finalize().into_bytes());
    format!("SharedAccessSignature sr={sr}&sig={}&se={expiry}", url_encode(&sig))
}

/// Seconds since the Unix epoch, `ttl` from now: an `expiry` for [`sas_token`].
pub fn expiry_in(ttl: Duration) -> u64 {
    (SystemTime::now() + ttl).duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// How the device or module proves who it is.
#[derive(Clone, PartialEq, Eq)]
pub enum Credential {
    /// `SharedAccessKey`, base64-decoded: tokens are made (and renewed) here.
    SharedAccessKey(Vec<u8>),
    /// `SharedAccessSignature`: a ready token, used as given until it expires.
    SharedAccessSignature(String),
    /// `x509=true`: a client certificate at the TLS layer, empty password.
    X509,
}

/// Never prints secrets.
impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credential::SharedAccessKey(_) => f.write_str("SharedAccessKey(<redacted>)"),
            Credential::SharedAccessSignature(_) => f.write_str("SharedAccessSignature(<redacted>)"),
            Credential::X509 => f.write_str("X509"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnectionStringError {
    /// The n-th `;`-separated part (counting from 1) has no `=`.
    #[error("connection string: part {0} is not Key=Value")]
    Malformed(usize),
    #[error("connection string: {0} is given twice")]
    Duplicate(String),
    #[error(
        "connection string: unknown key {0:?} (keys are case-sensitive: HostName, DeviceId, ModuleId, \
         SharedAccessKey, SharedAccessSignature, x509, GatewayHostName)"
    )]
    UnknownKey(String),
    #[error("connection string: {0} is missing")]
    Missing(&'static str),
    #[error("connection string: {key} is invalid: {reason}")]
    Invalid { key: &'static str, reason: String },
    #[error(
        "connection string: SharedAccessKeyName names a hub-level policy; use the device's (or module's) \
         own connection string"
    )]
    PolicyKey,
    #[error("connection string: no credential (SharedAccessKey, SharedAccessSignature or x509=true)")]
    NoCredential,
    #[error("connection string: give one credential, not both {0} and {1}")]
    TwoCredentials(&'static str, &'static str),
}

/// A device or module connection string:
/// `HostName=...;DeviceId=...;[ModuleId=...;]SharedAccessKey=...`
/// (or `SharedAccessSignature=...`, or `x509=true`; optionally `GatewayHostName=...`).
#[derive(Clone, PartialEq, Eq)]
pub struct ConnectionString {
    /// The hub's host name, e.g. `myhub.azure-devices.net`.
    pub host_name: String,
    pub device_id: String,
    pub module_id: Option<String>,
    /// An IoT Edge gateway to connect through instead of the hub.
    pub gateway_host_name: Option<String>,
    pub credential: Credential,
}

/// Never prints the key.
impl fmt::Debug for ConnectionString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectionString")
            .field("host_name", &self.host_name)
            .field("device_id", &self.device_id)
            .field("module_id", &self.module_id)
            .field("gateway_host_name", &self.gateway_host_name)
            .field("credential", &self.credential)
            .finish()
    }
}

/// IoT Hub limits device and module ids to 128 characters.
const MAX_ID_LEN: usize = 128;

fn check_id(key: &'static str, id: &str) -> Result<(), ConnectionStringError> {
    let reason = if id.is_empty() {
        "empty".to_string()
    } else if id.len() > MAX_ID_LEN {
        format!("{} characters, more than {MAX_ID_LEN}", id.len())
    } else if let Some(c) =
        id.chars().find(|c| c.is_whitespace() || c.is_control() || matches!(c, '/' | '#' | '+'))
    {
        // '/' would change the topic's structure; '#' and '+' are MQTT
        // wildcards, which a topic name to publish to cannot contain.
        format!("contains {c:?}, which cannot go into an MQTT topic name")
    } else {
        return Ok(());
    };
    Err(ConnectionStringError::Invalid { key, reason })
}

fn check_host(key: &'static str, host: &str) -> Result<(), ConnectionStringError> {
    if host.is_empty() {
        return Err(ConnectionStringError::Invalid { key, reason: "empty".into() });
    }
    if let Some(c) = host.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '.'))) {
        return Err(ConnectionStringError::Invalid {
            key,
            reason: format!("{c:?} is not allowed in a host name"),
        });
    }
    Ok(())
}

impl FromStr for ConnectionString {
    type Err = ConnectionStringError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        use ConnectionStringError as E;
        let (mut host, mut device, mut module, mut gateway) = (None, None, None, None);
        let (mut key, mut sas, mut x509) = (None, None, None);
        for (index, segment) in s.trim().split(';').enumerate().filter(|(_, seg)| !seg.trim().is_empty()) {
            let Some((name, value)) = segment.split_once('=') else {
                // The position, not the text: it may be a key.
                return Err(E::Malformed(index + 1));
            };
            let name = name.trim();
            let slot = match name {
                "HostName" => &mut host,
                "DeviceId" => &mut device,
                "ModuleId" => &mut module,
                "GatewayHostName" => &mut gateway,
                "SharedAccessKey" => &mut key,
                "SharedAccessSignature" => &mut sas,
                "x509" => &mut x509,
                "SharedAccessKeyName" => return Err(E::PolicyKey),
                other => return Err(E::UnknownKey(other.to_string())),
            };
            if slot.replace(value.trim()).is_some() {
                return Err(E::Duplicate(name.to_string()));
            }
        }

        let host_name = host.ok_or(E::Missing("HostName"))?;
        check_host("HostName", host_name)?;
        let device_id = device.ok_or(E::Missing("DeviceId"))?;
        check_id("DeviceId", device_id)?;
        if let Some(module) = module {
            check_id("ModuleId", module)?;
        }
        if let Some(gateway) = gateway {
            check_host("GatewayHostName", gateway)?;
        }
        let x509 = match x509 {
            None => false,
            Some(v) if v.eq_ignore_ascii_case("true") => true,
            Some(v) if v.eq_ignore_ascii_case("false") => false,
            Some(v) => return Err(E::Invalid { key: "x509", reason: format!("{v:?} is not true or false") }),
        };
        let credential = match (key, sas, x509) {
            (Some(_), Some(_), _) => {
                return Err(E::TwoCredentials("SharedAccessKey", "SharedAccessSignature"));
            }
            (Some(_), None, true) => return Err(E::TwoCredentials("SharedAccessKey", "x509")),
            (None, Some(_), true) => return Err(E::TwoCredentials("SharedAccessSignature", "x509")),
            (Some(key), None, false) => {
                // The decoder's error would quote the offending character: not shown.
                let bytes = BASE64
                    .decode(key)
                    .map_err(|_| E::Invalid { key: "SharedAccessKey", reason: "not valid base64".into() })?;
                if bytes.is_empty() {
                    return Err(E::Invalid { key: "SharedAccessKey", reason: "empty".into() });
                }
                Credential::SharedAccessKey(bytes)
            }
            (None, Some(token), false) => {
                if !token.starts_with("SharedAccessSignature ") || !token.contains("sig=") {
                    return Err(E::Invalid {
                        key: "SharedAccessSignature",
                        reason: "not a token of the form \"SharedAccessSignature sr=...&sig=...&se=...\""
                            .into(),
                    });
                }
                Credential::SharedAccessSignature(token.to_string())
            }
            (None, None, true) => Credential::X509,
            (None, None, false) => return Err(E::NoCredential),
        };
        Ok(ConnectionString {
            host_name: host_name.to_string(),
            device_id: device_id.to_string(),
            module_id: module.map(str::to_string),
            gateway_host_name: gateway.map(str::to_string),
            credential,
        })
    }
}

impl ConnectionString {
    /// Where to connect: the gateway when there is one, else the hub.
    pub fn broker_host(&self) -> &str {
        self.gateway_host_name.as_deref().unwrap_or(&self.host_name)
    }

    /// CONNECT ClientId: `{deviceId}` or `{deviceId}/{moduleId}`.
    pub fn client_id(&self) -> String {
        match &self.module_id {
            Some(module) => format!("{}/{module}", self.device_id),
            None => self.device_id.clone(),
        }
    }

    /// CONNECT Username: `{host}/{deviceId}/?api-version=...` or
    /// `{host}/{deviceId}/{moduleId}/?api-version=...`.
    pub fn username(&self) -> String {
        format!("{}/{}/?api-version={API_VERSION}", self.host_name, self.client_id())
    }

    /// The resource URI a SAS token is scoped to:
    /// `{host}/devices/{deviceId}` or `{host}/devices/{deviceId}/modules/{moduleId}`.
    pub fn resource_uri(&self) -> String {
        match &self.module_id {
            Some(module) => format!("{}/devices/{}/modules/{module}", self.host_name, self.device_id),
            None => format!("{}/devices/{}", self.host_name, self.device_id),
        }
    }

    /// CONNECT Password valid until `expiry` (Unix seconds): a SAS token made
    /// from the key, the token given in the connection string, or nothing for
    /// X.509.
    pub fn password(&self, expiry: u64) -> Option<String> {
        match &self.credential {
            Credential::SharedAccessKey(key) => Some(sas_token(&self.resource_uri(), key, expiry)),
            Credential::SharedAccessSignature(token) => Some(token.clone()),
            Credential::X509 => None,
        }
    }

    /// The device-to-cloud topic without properties.
    pub fn events_topic(&self) -> String {
        match &self.module_id {
            Some(module) => format!("devices/{}/modules/{module}/messages/events/", self.device_id),
            None => format!("devices/{}/messages/events/", self.device_id),
        }
    }

    /// The device-to-cloud topic of a security message: JSON, UTF-8, and the
    /// security interface id.
    pub fn security_message_topic(&self) -> String {
        let mut topic = self.events_topic();
        topic.push_str(&property_bag(&SECURITY_MESSAGE_PROPERTIES));
        topic
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Known-answer vector, computed independently of this code with Python's
    // standard library (and the signature cross-checked with
    // `printf '<sr>\n1767225600' | openssl dgst -sha256 -hmac 'shrike-test-key-0123456789abcdef' -binary | base64`):
    //
    //   python3 -c 'import base64,hmac,hashlib,urllib.parse as u
    //   key=base64.b64encode(b"shrike-test-key-0123456789abcdef").decode(); se=1767225600
    //   for uri in ["shrike-test.azure-devices.net/devices/gateway-01",
    //               "shrike-test.azure-devices.net/devices/gateway-01/modules/azureiotsecurity"]:
    //       sr=u.quote(uri,safe="")
    //       sig=base64.b64encode(hmac.new(base64.b64decode(key),(sr+"\n"+str(se)).encode(),hashlib.sha256).digest()).decode()
    //       print(key, "SharedAccessSignature sr=%s&sig=%s&se=%d" % (sr,u.quote(sig,safe=""),se))'
    const KEY: &str = "c2hyaWtlLXRlc3Qta2V5LTAxMjM0NTY3ODlhYmNkZWY=";
    const EXPIRY: u64 = 1_767_225_600; // 2026-01-01T00:00:00Z
    const DEVICE_TOKEN: &str = "SharedAccessSignature sr=shrike-test.azure-devices.net%2Fdevices%2Fgateway-01\
        &sig=OQNhwokNKAXqJsvnmzAN8ISFdljbWqrDWU72bucvXCo%3D&se=1767225600";
    const MODULE_TOKEN: &str = "SharedAccessSignature \
        sr=shrike-test.azure-devices.net%2Fdevices%2Fgateway-01%2Fmodules%2Fazureiotsecurity\
        &sig=oGFuDNOmr78xQSJ0jjVw7HPz8GIShVje5rqfxL02pB4%3D&se=1767225600";

    fn device() -> ConnectionString {
        format!("HostName=shrike-test.azure-devices.net;DeviceId=gateway-01;SharedAccessKey={KEY}")
            .parse()
            .unwrap()
    }

    fn module() -> ConnectionString {
        format!(
            "HostName=shrike-test.azure-devices.net;DeviceId=gateway-01;ModuleId=azureiotsecurity;SharedAccessKey={KEY};"
        )
        .parse()
        .unwrap()
    }

    #[test]
    fn sas_token_known_answer() {
        assert_eq!(device().password(EXPIRY).unwrap(), DEVICE_TOKEN);
        assert_eq!(module().password(EXPIRY).unwrap(), MODULE_TOKEN);
        let key = BASE64.decode(KEY).unwrap();
        assert_eq!(key, b"shrike-test-key-0123456789abcdef");
        assert_eq!(sas_token("shrike-test.azure-devices.net/devices/gateway-01", &key, EXPIRY), DEVICE_TOKEN);
    }

    #[test]
    fn device_strings() {
        let c = device();
        assert_eq!(c.client_id(), "gateway-01");
        assert_eq!(c.username(), "shrike-test.azure-devices.net/gateway-01/?api-version=2021-04-12");
        assert_eq!(c.resource_uri(), "shrike-test.azure-devices.net/devices/gateway-01");
        assert_eq!(c.events_topic(), "devices/gateway-01/messages/events/");
        assert_eq!(
            c.security_message_topic(),
            "devices/gateway-01/messages/events/\
             %24.ct=application%2Fjson&%24.ce=utf-8&%24.ifid=urn%3Aazureiot%3ASecurity%3ASecurityAgent%3A1"
        );
        assert_eq!(c.broker_host(), "shrike-test.azure-devices.net");
    }

    #[test]
    fn module_strings() {
        let c = module();
        assert_eq!(c.client_id(), "gateway-01/azureiotsecurity");
        assert_eq!(
            c.username(),
            "shrike-test.azure-devices.net/gateway-01/azureiotsecurity/?api-version=2021-04-12"
        );
        assert_eq!(
            c.resource_uri(),
            "shrike-test.azure-devices.net/devices/gateway-01/modules/azureiotsecurity"
        );
        assert_eq!(
            c.security_message_topic(),
            "devices/gateway-01/modules/azureiotsecurity/messages/events/\
             %24.ct=application%2Fjson&%24.ce=utf-8&%24.ifid=urn%3Aazureiot%3ASecurity%3ASecurityAgent%3A1"
        );
    }

    #[test]
    fn property_bag_encodes_names_and_values() {
        assert_eq!(property_bag(&[]), "");
        assert_eq!(
            property_bag(&[("$.ct", "application/json;charset=utf-8")]),
            "%24.ct=application%2Fjson%3Bcharset%3Dutf-8"
        );
        assert_eq!(property_bag(&[("a b", "x&y=z"), ("k", "~-._")]), "a%20b=x%26y%3Dz&k=~-._");
    }

    #[test]
    fn other_credentials() {
        let token = "SharedAccessSignature sr=h%2Fdevices%2Fd&sig=abc%3D&se=1";
        let c: ConnectionString =
            format!("HostName=h;DeviceId=d;SharedAccessSignature={token}").parse().unwrap();
        assert_eq!(c.password(0).as_deref(), Some(token));
        let c: ConnectionString = "HostName=h;DeviceId=d;x509=true".parse().unwrap();
        assert_eq!(c.credential, Credential::X509);
        assert_eq!(c.password(EXPIRY), None);
        let c: ConnectionString = format!(
            "HostName=hub.azure-devices.net;DeviceId=d;SharedAccessKey={KEY};GatewayHostName=edge.local"
        )
        .parse()
        .unwrap();
        assert_eq!(c.broker_host(), "edge.local");
        assert_eq!(c.username(), "hub.azure-devices.net/d/?api-version=2021-04-12");
    }

    #[test]
    fn errors_name_what_is_wrong() {
        use ConnectionStringError as E;
        let parse = |s: &str| s.parse::<ConnectionString>().unwrap_err();
        assert_eq!(parse(&format!("DeviceId=d;SharedAccessKey={KEY}")), E::Missing("HostName"));
        assert_eq!(parse(&format!("HostName=h;SharedAccessKey={KEY}")), E::Missing("DeviceId"));
        assert_eq!(parse("HostName=h;DeviceId=d"), E::NoCredential);
        assert_eq!(parse(""), E::Missing("HostName"));
        assert_eq!(
            parse("HostName=h;DeviceId=d;SharedAccessKey=not base64!"),
            E::Invalid { key: "SharedAccessKey", reason: "not valid base64".into() }
        );
        assert!(matches!(
            parse("HostName=h;DeviceId=d;SharedAccessKey="),
            E::Invalid { key: "SharedAccessKey", .. }
        ));
        assert_eq!(
            parse(&format!("Hostname=h;DeviceId=d;SharedAccessKey={KEY}")),
            E::UnknownKey("Hostname".into())
        );
        assert_eq!(
            parse(&format!("HostName=h;HostName=g;DeviceId=d;SharedAccessKey={KEY}")),
            E::Duplicate("HostName".into())
        );
        assert_eq!(parse("HostName=h;DeviceId=d;oops"), E::Malformed(3));
        assert_eq!(
            parse(&format!("HostName=h;SharedAccessKeyName=iothubowner;SharedAccessKey={KEY}")),
            E::PolicyKey
        );
        assert_eq!(
            parse(&format!("HostName=h;DeviceId=d;SharedAccessKey={KEY};x509=true")),
            E::TwoCredentials("SharedAccessKey", "x509")
        );
        assert!(matches!(
            parse(&format!("HostName=h/x;DeviceId=d;SharedAccessKey={KEY}")),
            E::Invalid { key: "HostName", .. }
        ));
        assert!(matches!(
            parse(&format!("HostName=h;DeviceId=;SharedAccessKey={KEY}")),
            E::Invalid { key: "DeviceId", .. }
        ));
        assert!(matches!(
            parse(&format!("HostName=h;DeviceId=a#b;SharedAccessKey={KEY}")),
            E::Invalid { key: "DeviceId", .. }
        ));
        let long = "x".repeat(129);
        assert!(matches!(
            parse(&format!("HostName=h;DeviceId={long};SharedAccessKey={KEY}")),
            E::Invalid { key: "DeviceId", .. }
        ));
        assert!(matches!(
            parse(&format!("HostName=h;DeviceId=d;ModuleId=;SharedAccessKey={KEY}")),
            E::Invalid { key: "ModuleId", .. }
        ));
        assert!(matches!(
            parse("HostName=h;DeviceId=d;SharedAccessSignature=sig=1"),
            E::Invalid { key: "SharedAccessSignature", .. }
        ));
        // Messages name the problem.
        assert_eq!(E::Missing("DeviceId").to_string(), "connection string: DeviceId is missing");
    }

    #[test]
    fn debug_output_has_no_secret() {
        let shown = format!("{:?}", device());
        assert!(!shown.contains(KEY) && shown.contains("<redacted>"), "{shown}");
    }

    #[test]
    fn expiry_is_in_the_future() {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
        let e = expiry_in(Duration::from_secs(3600));
        assert!(e >= now + 3599 && e <= now + 3601);
    }
}
