//! `wechatpay-sim diagnose` (tests being written).
