//! Built-in detectors: what a single-event rule cannot say. One file each,
//! each a plain struct fed `(event)` / `tick(now)` returning alerts.

use super::{DetectConfig, DetectError, Detector};

/// The enabled built-in detectors.
pub fn detectors(cfg: &DetectConfig) -> Result<Vec<Box<dyn Detector>>, DetectError> {
    let _ = cfg;
    Ok(Vec::new())
}
