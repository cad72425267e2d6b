//! Reports security events to the Shrike agent through its SDK socket, with
//! the blocking client (feature `sdk`; no async runtime).
//!
//! ```sh
//! cargo run -p shrike-common --features sdk --example sdk_send
//! SHRIKE_SDK_SOCKET=/tmp/sdk.sock cargo run -p shrike-common --features sdk --example sdk_send
//! ```

use shrike_common::{
    schema::{Event, Login, Outcome},
    sdk::{Client, SdkError},
};

fn main() -> Result<(), SdkError> {
    // /run/shrike/sdk.sock, or $SHRIKE_SDK_SOCKET.
    let mut client = Client::connect_default()?;

    // A kind of your own: a Name starting with A-Z, fields of strings,
    // numbers and booleans.
    let id = client.send_custom("DoorOpened", [("Door", "cabinet".into()), ("Forced", true.into())])?;
    println!("DoorOpened reported as {id}");

    // An Azure kind, typed: validated against its schema by the agent too.
    let login = Login {
        process_id: std::process::id(),
        user_id: None,
        user_name: Some("operator".into()),
        operation: "webui:login".into(),
        executable: std::env::current_exe().map(|p| p.display().to_string()).unwrap_or_default(),
        remote_address: Some("192.0.2.7".parse().expect("an address")),
        remote_port: None,
        local_port: Some("443".into()),
        result: Outcome::Fail,
        extra_details: Default::default(),
    };
    let id = client.send(&Event::new(login))?;
    println!("Login reported as {id}");

    // Any JSON line; a rejection says which field is wrong.
    match client.send(&serde_json::json!({"Name": "ProcessTerminate", "Payload": [{"Executable": "/x"}]})) {
        Err(SdkError::Rejected(why)) => println!("rejected, as expected: {why}"),
        other => println!("unexpected: {other:?}"),
    }
    Ok(())
}
