//! `shrike send`: reports events through the agent's SDK socket, as any
//! other program would (no root needed: a member of group `shrike`).

use std::{io::BufRead, path::PathBuf};

use clap::Args;
use serde_json::{Value, json};
use shrike_common::sdk::{Client, SdkError};

/// `shrike send`'s flags.
#[derive(Debug, Clone, Args)]
pub struct SendArgs {
    /// The agent's SDK socket.
    #[arg(long, value_name = "PATH", default_value = shrike_common::sdk::DEFAULT_SOCKET)]
    pub socket: PathBuf,
    /// The event's Name: an Azure kind (ProcessCreate, Login...) or one of
    /// your own (starts with A-Z) [default: none: events are read from
    /// stdin, one JSON object a line].
    #[arg(long)]
    pub name: Option<String>,
    /// The payload: a JSON object (one item) or an array of items
    /// [default: one empty item].
    #[arg(long, value_name = "JSON", requires = "name")]
    pub payload: Option<String>,
    /// Security, Operational or Diagnostic [default: the kind's; Security for
    /// your own kinds].
    #[arg(long, requires = "name")]
    pub event_type: Option<String>,
    /// Triggered or Periodic [default: the kind's; Triggered for your own kinds].
    #[arg(long, requires = "name")]
    pub category: Option<String>,
}

/// Prints one reply line per event sent; 0 when every event was accepted,
/// 1 when one was rejected or the agent could not be reached, 2 for bad flags.
pub fn run(args: &SendArgs) -> i32 {
    let lines: Vec<String> = match &args.name {
        Some(name) => match line_of_flags(name, args) {
            Ok(l) => vec![l],
            Err(e) => {
                eprintln!("error: {e}");
                return 2;
            }
        },
        None => Vec::new(),
    };
    let mut client = match Client::connect(&args.socket) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: cannot connect to {}: {e}", args.socket.display());
            return 1;
        }
    };
    let mut code = 0;
    let mut send = |line: &str| -> Result<(), SdkError> {
        let reply = client.send_line(line)?;
        println!("{}", serde_json::to_string(&reply).unwrap_or_default());
        if !reply.ok {
            code = 1;
        }
        Ok(())
    };
    let result = if args.name.is_some() {
        lines.iter().try_for_each(|l| send(l))
    } else {
        std::io::stdin().lock().lines().try_for_each(|l| {
            let l = l.map_err(SdkError::Io)?;
            if l.trim().is_empty() { Ok(()) } else { send(&l) }
        })
    };
    if let Err(e) = result {
        eprintln!("error: {e}");
        return 1;
    }
    code
}

fn line_of_flags(name: &str, args: &SendArgs) -> Result<String, String> {
    let payload = match &args.payload {
        None => json!([{}]),
        Some(text) => {
            match serde_json::from_str::<Value>(text).map_err(|e| format!("--payload is not JSON: {e}"))? {
                v @ Value::Object(_) => Value::Array(vec![v]),
                v @ Value::Array(_) => v,
                _ => return Err("--payload: a JSON object (one item) or an array of items".into()),
            }
        }
    };
    let mut ev = json!({ "Name": name, "Payload": payload });
    if let Some(t) = &args.event_type {
        ev["EventType"] = json!(t);
    }
    if let Some(c) = &args.category {
        ev["Category"] = json!(c);
    }
    Ok(ev.to_string())
}
