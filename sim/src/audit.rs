//! `wechatpay-sim audit` (being written).

use crate::SimError;

/// Runs `audit`.
pub async fn run(_args: &crate::cli::AuditArgs) -> Result<bool, SimError> {
    Err(SimError::new("not written yet"))
}
