//! Payer identifiers out of a decrypted resource before it is printed.

use serde_json::Value;

/// What a redacted value is replaced with.
pub const REDACTED: &str = "<redacted>";

/// Replaces every payer identifier in `value`, at any depth: every field whose name
/// contains `openid` (`payer.openid`, `payer.sp_openid`, `payer.sub_openid`,
/// `combine_payer_info.openid`, `sub_orders[].sub_openid`, a transfer's `openid`…), and
/// the `account` of a profit-sharing receiver whose `type` is `PERSONAL_OPENID`.
pub fn redact(value: &mut Value) {
    match value {
        Value::Object(fields) => {
            let personal = fields
                .get("type")
                .and_then(Value::as_str)
                .is_some_and(|kind| kind.to_ascii_uppercase().contains("OPENID"));
            for (name, inner) in fields.iter_mut() {
                if name.to_ascii_lowercase().contains("openid") || (personal && name == "account") {
                    *inner = Value::String(REDACTED.to_owned());
                } else {
                    redact(inner);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(redact),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_payer_identifier_is_redacted_and_nothing_else() {
        let mut value = json!({
            "payer": {"openid": "o1", "sp_openid": "o2", "sub_openid": "o3"},
            "combine_payer_info": {"openid": "o4"},
            "sub_orders": [{"sub_openid": "o5", "out_trade_no": "T1"}],
            "receiver": {"type": "PERSONAL_OPENID", "account": "o6"},
            "merchant": {"type": "MERCHANT_ID", "account": "190001"},
            "OpenId": {"nested": "o7"},
            "amount": {"total": 1}
        });
        redact(&mut value);
        let text = value.to_string();
        for secret in ["o1", "o2", "o3", "o4", "o5", "o6", "o7"] {
            assert!(
                !text.contains(&format!("\"{secret}\"")),
                "{secret} in {text}"
            );
        }
        assert_eq!(value["sub_orders"][0]["out_trade_no"], "T1");
        assert_eq!(value["merchant"]["account"], "190001");
        assert_eq!(value["amount"]["total"], 1);
        assert_eq!(value["payer"]["openid"], REDACTED);
    }
}
