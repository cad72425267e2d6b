//! Sigma rules on the gateway.

use super::{DetectConfig, DetectError, DetectStats, Detector};
use crate::events::Event;

/// The compiled rule set.
pub struct SigmaEngine {}

impl Detector for SigmaEngine {
    fn id(&self) -> &'static str {
        "sigma"
    }

    fn observe(&mut self, _ev: &Event, _out: &mut Vec<super::Alert>) {}
}

/// Loads the rules of `cfg.rules` (None when there are none).
pub fn load(cfg: &DetectConfig, stats: &mut DetectStats) -> Result<Option<SigmaEngine>, DetectError> {
    let _ = (cfg, stats);
    Ok(None)
}
