//! The same with the async client on tokio (feature `sdk-tokio`).
//!
//! ```sh
//! cargo run -p shrike-common --features sdk-tokio --example sdk_send_async
//! ```

use shrike_common::sdk::{AsyncClient, SdkError};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), SdkError> {
    let mut client = AsyncClient::connect_default().await?;
    for door in ["cabinet", "rack"] {
        let id = client.send_custom("DoorOpened", [("Door", door.into()), ("Forced", false.into())]).await?;
        println!("DoorOpened ({door}) reported as {id}");
    }
    Ok(())
}
