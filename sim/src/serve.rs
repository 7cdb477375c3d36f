//! `wechatpay-sim serve` (being written).

use crate::SimError;

/// Runs `serve`.
pub async fn run(_args: &crate::cli::ServeArgs) -> Result<bool, SimError> {
    Err(SimError::new("not written yet"))
}
