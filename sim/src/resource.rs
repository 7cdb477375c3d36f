//! The decrypted resource a notification carries: a realistic default per event type,
//! a file instead, and `--set FIELD=VALUE` edits.

use std::path::Path;

use serde_json::{Map, Value, json};

use crate::error::{SimError, context};
use crate::keys::{Keys, random_digits};

/// The resource for `event_type`, from `file` if given, else a realistic default for the
/// merchant in `keys`: a payment, or for `REFUND.*` a refund of such a payment.
pub fn resource(keys: &Keys, event_type: &str, file: Option<&Path>) -> Result<Value, SimError> {
    match file {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(context(path.display()))?;
            let value: Value =
                serde_json::from_str(&text).map_err(context(format!("{}", path.display())))?;
            if !value.is_object() {
                return Err(SimError(format!(
                    "{}: the resource must be a JSON object",
                    path.display()
                )));
            }
            Ok(value)
        }
        None if event_type.starts_with("REFUND.") => Ok(refund(keys, event_type)),
        None => Ok(payment(keys)),
    }
}

/// A JSAPI payment of 0.99 yuan, paid just now, with fresh order numbers.
pub fn payment(keys: &Keys) -> Value {
    json!({
        "mchid": keys.mchid,
        "appid": "wxd678efh567hg6787",
        "out_trade_no": format!("SIM{}", random_digits(20)),
        "transaction_id": format!("4200002{}", random_digits(21)),
        "trade_type": "JSAPI",
        "trade_state": "SUCCESS",
        "trade_state_desc": "支付成功",
        "bank_type": "CMC",
        "attach": "",
        "success_time": rfc3339_beijing_now(),
        "payer": { "openid": format!("oSim{}", crate::keys::random_alphanumeric(24)) },
        "amount": { "total": 99, "payer_total": 99, "currency": "CNY", "payer_currency": "CNY" }
    })
}

/// A full refund of a fresh payment; `refund_status` follows the event type
/// (`REFUND.SUCCESS` → `SUCCESS`, `REFUND.ABNORMAL` → `ABNORMAL`, `REFUND.CLOSED` → `CLOSED`).
pub fn refund(keys: &Keys, event_type: &str) -> Value {
    let status = event_type.strip_prefix("REFUND.").unwrap_or("SUCCESS");
    let mut refund = json!({
        "mchid": keys.mchid,
        "out_trade_no": format!("SIM{}", random_digits(20)),
        "transaction_id": format!("4200002{}", random_digits(21)),
        "out_refund_no": format!("SIMR{}", random_digits(19)),
        "refund_id": format!("5030{}", random_digits(25)),
        "refund_status": status,
        "user_received_account": "支付用户零钱",
        "amount": { "total": 99, "refund": 99, "payer_total": 99, "payer_refund": 99 }
    });
    if status == "SUCCESS" {
        refund["success_time"] = json!(rfc3339_beijing_now());
    }
    refund
}

/// Applies `FIELD=VALUE`: a dotted path into the resource (`amount.total`, `payer.openid`,
/// `sub_orders.0.amount.total_amount`); the value is read as JSON when it parses
/// (`1`, `true`, `{"a":1}`, `"quoted"`), else as a string. Missing objects are created.
pub fn set(resource: &mut Value, assignment: &str) -> Result<(), SimError> {
    let (path, raw) = assignment
        .split_once('=')
        .filter(|(path, _)| !path.is_empty())
        .ok_or_else(|| SimError(format!("--set {assignment}: expected FIELD=VALUE")))?;
    let value = serde_json::from_str(raw).unwrap_or_else(|_| Value::String(raw.to_owned()));
    let mut target = resource;
    let mut parts = path.split('.').peekable();
    while let Some(part) = parts.next() {
        let last = parts.peek().is_none();
        target = match target {
            Value::Array(items) => {
                let index: usize = part.parse().map_err(|_| {
                    SimError(format!(
                        "--set {path}: `{part}` indexes an array: use a number"
                    ))
                })?;
                items.get_mut(index).ok_or_else(|| {
                    SimError(format!("--set {path}: the array has no element {index}"))
                })?
            }
            Value::Object(fields) => {
                if last {
                    fields.insert(part.to_owned(), value);
                    return Ok(());
                }
                fields
                    .entry(part.to_owned())
                    .or_insert_with(|| Value::Object(Map::new()))
            }
            _ => {
                return Err(SimError(format!(
                    "--set {path}: `{part}` is inside a value that is not an object"
                )));
            }
        };
        if last {
            *target = value;
            return Ok(());
        }
    }
    Ok(())
}

/// Now in Beijing time, as WeChat Pay writes times: `2026-11-30T18:04:05+08:00`.
pub fn rfc3339_beijing_now() -> String {
    let offset = time::UtcOffset::from_hms(8, 0, 0).unwrap_or(time::UtcOffset::UTC);
    let now = time::OffsetDateTime::now_utc().to_offset(offset);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}+08:00",
        now.year(),
        u8::from(now.month()),
        now.day(),
        now.hour(),
        now.minute(),
        now.second()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_edits_a_nested_number() {
        let mut value = json!({"amount": {"total": 99}});
        set(&mut value, "amount.total=1").unwrap();
        assert_eq!(value["amount"]["total"], json!(1));
    }

    #[test]
    fn set_keeps_text_that_is_not_json_as_a_string() {
        let mut value = json!({});
        set(&mut value, "out_trade_no=ORDER-1").unwrap();
        assert_eq!(value["out_trade_no"], json!("ORDER-1"));
    }

    #[test]
    fn set_creates_missing_objects_and_indexes_arrays() {
        let mut value = json!({"sub_orders": [{"amount": {}}]});
        set(&mut value, "sub_orders.0.amount.total_amount=5").unwrap();
        set(&mut value, "scene_info.device_id=\"013\"").unwrap();
        assert_eq!(value["sub_orders"][0]["amount"]["total_amount"], json!(5));
        assert_eq!(value["scene_info"]["device_id"], json!("013"));
    }

    #[test]
    fn set_refuses_a_flag_without_a_field() {
        let mut value = json!({});
        assert!(set(&mut value, "=1").is_err());
        assert!(set(&mut value, "amount").is_err());
        let mut value = json!({"amount": 1});
        assert!(set(&mut value, "amount.total=1").is_err());
    }
}
