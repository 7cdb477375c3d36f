//! `wechatpay-sim serve` (tests being written).
