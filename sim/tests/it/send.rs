//! `wechatpay-sim send` (tests being written).
