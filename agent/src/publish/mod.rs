//! Delivering security messages: the on-disk spool, the MQTT publisher.

pub mod azure;
pub mod mqtt;
pub mod spool;
