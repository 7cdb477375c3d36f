//! `wechatpay-sim diagnose` (being written).

use crate::SimError;

/// Runs `diagnose`.
pub fn run(_args: &crate::cli::DiagnoseArgs) -> Result<bool, SimError> {
    Err(SimError::new("not written yet"))
}
