//! Typed access to the decrypted resource: every model, the fallback, and lenient parsing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support;

use support::{NOW, test_layer};
use tower_wechatpay::test_util::{
    SignedNotification, TestSigner, sample_combine_payment, sample_partner_payment, sample_payment,
    sample_refund,
};
use tower_wechatpay::{Event, Notification};

fn open(signed: SignedNotification) -> Notification {
    test_layer().verify(&signed.headers, &signed.body).unwrap()
}

fn notify(event_type: &str, resource: &serde_json::Value) -> Notification {
    open(
        TestSigner::public_key_mode()
            .notification(event_type, resource)
            .timestamp(NOW)
            .build()
            .unwrap(),
    )
}

#[test]
fn direct_payment() {
    let notification = notify("TRANSACTION.SUCCESS", &sample_payment());
    let payment = notification.payment().expect("a direct payment");
    assert_eq!(payment.mchid.as_deref(), Some("1900012345"));
    assert_eq!(payment.out_trade_no, "2025112811200060181590");
    assert_eq!(payment.amount.total, 990);
    assert_eq!(payment.amount.currency.as_deref(), Some("CNY"));
    assert!(payment.is_success());
    assert_eq!(notification.original_type(), Some("transaction"));
    assert_eq!(notification.summary(), Some("支付成功"));
    assert_eq!(notification.resource_type(), Some("encrypt-resource"));
    assert!(notification.create_time().is_some());
}

#[test]
fn partner_payment() {
    let notification = notify("TRANSACTION.SUCCESS", &sample_partner_payment());
    let payment = notification.partner_payment().expect("a partner payment");
    assert_eq!(payment.sp_mchid, "1230000109");
    assert_eq!(payment.sub_mchid, "1900000109");
    assert_eq!(payment.amount.total, 100);
    assert!(payment.payer.sub_openid.is_some());
    assert!(notification.payment().is_none());
}

#[test]
fn combine_payment() {
    let notification = notify("TRANSACTION.SUCCESS", &sample_combine_payment());
    let combine = notification.combine_payment().expect("a combine payment");
    assert_eq!(combine.combine_out_trade_no, "20150806125346");
    assert_eq!(combine.sub_orders.len(), 2);
    let amounts: Vec<i64> = combine
        .sub_orders
        .iter()
        .map(|order| order.amount.as_ref().unwrap().total_amount)
        .collect();
    assert_eq!(amounts, [10, 20]);
}

#[test]
fn refund() {
    let notification = notify("REFUND.SUCCESS", &sample_refund());
    let refund = notification.refund().expect("a refund");
    assert_eq!(refund.refund_id, "50000000382019052709732678859");
    assert_eq!(refund.amount.refund, 990);
    assert!(refund.is_success());
    assert_eq!(notification.original_type(), Some("refund"));
}

#[test]
fn unknown_events_reach_the_handler_as_other() {
    let transfer = serde_json::json!({
        "out_bill_no": "plfk2020042013", "transfer_bill_no": "1330000071100999991182020050700019480001",
        "state": "SUCCESS", "mch_id": "1900001109", "transfer_amount": 2000,
        "create_time": "2015-05-20T13:29:35+08:00", "update_time": "2015-05-20T13:29:35+08:00"
    });
    let signed = TestSigner::public_key_mode()
        .notification("MCHTRANSFER.BILL.FINISHED", &transfer)
        .original_type("mch_payment")
        .timestamp(NOW)
        .build()
        .unwrap();
    let notification = open(signed);
    assert_eq!(notification.event(), &Event::Other);
    assert_eq!(notification.event_type(), "MCHTRANSFER.BILL.FINISHED");
    assert_eq!(notification.resource_value().unwrap(), transfer);

    #[derive(serde::Deserialize)]
    struct TransferBill {
        out_bill_no: String,
        transfer_amount: i64,
    }
    let bill: TransferBill = notification.decode().unwrap();
    assert_eq!(bill.out_bill_no, "plfk2020042013");
    assert_eq!(bill.transfer_amount, 2000);
}

#[test]
fn profit_sharing_under_transaction_success_is_not_mistaken_for_a_payment() {
    let sharing = serde_json::json!({
        "mchid": "1900000100", "transaction_id": "4200000000000000000000000000",
        "order_id": "1217752501201407033233368018", "out_order_no": "P20150806125346",
        "receiver": {"type": "MERCHANT_ID", "account": "1900000109", "amount": 888, "description": "分给商户"},
        "success_time": "2018-06-08T10:34:56+08:00"
    });
    let signed = TestSigner::public_key_mode()
        .notification("TRANSACTION.SUCCESS", &sharing)
        .original_type("profitsharing")
        .timestamp(NOW)
        .build()
        .unwrap();
    assert_eq!(open(signed).event(), &Event::Other);
}

#[test]
fn models_ignore_unknown_fields_and_tolerate_missing_optional_ones() {
    let resource = serde_json::json!({
        "out_trade_no": "A1", "transaction_id": "T1", "trade_state": "SUCCESS",
        "amount": {"total": 1, "brand_new_field": {"nested": true}},
        "a_field_from_2030": [1, 2, 3]
    });
    let notification = notify("TRANSACTION.SUCCESS", &resource);
    let payment = notification.payment().unwrap();
    assert_eq!(payment.amount.total, 1);
    assert_eq!(payment.amount.payer_total, None);
    assert_eq!(payment.payer.openid, None);
    assert!(payment.promotion_detail.is_empty());
}

#[test]
fn resource_json_is_the_exact_plaintext() {
    let text = r#"{"out_trade_no":"A1","transaction_id":"T1","trade_state":"SUCCESS","amount":{"total":1},"z":1,"a":2}"#;
    let signed = TestSigner::public_key_mode()
        .notification("TRANSACTION.SUCCESS", &serde_json::Value::Null)
        .resource_text(text)
        .timestamp(NOW)
        .build()
        .unwrap();
    assert_eq!(open(signed).resource_json(), text);
}
