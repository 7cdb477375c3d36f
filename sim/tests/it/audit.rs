//! `wechatpay-sim audit` (tests being written).
