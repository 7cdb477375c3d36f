//! Confirming a notification with WeChat Pay (状态验证). Being written.

/// What WeChat Pay's answer says about a notification.
#[derive(Debug)]
#[non_exhaustive]
pub enum Confirmation {}

/// A field where the notification and WeChat Pay's answer disagree.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Mismatch {}
