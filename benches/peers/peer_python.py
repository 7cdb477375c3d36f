#!/usr/bin/env python3
"""Times Python's wechatpayv3 on gen_fixtures.py notifications, for benches/compare.sh.

usage: peer_python.py FIXTURE_DIR SECONDS

Checks that every notification is accepted and decrypts to its plaintext, that a tampered
one is refused, then runs WeChatPay.callback(headers, body) over all of them, in passes,
for about SECONDS. Prints one line: "wechatpayv3<TAB>median ns per notification".
The library is built in public-key mode, so no network call happens.
"""
import json
import statistics
import sys
import time
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from wechatpayv3 import WeChatPay, WeChatPayType

fixtures, seconds = Path(sys.argv[1]), float(sys.argv[2])
meta = json.loads((fixtures / "meta.json").read_text())
records = [json.loads(line) for line in (fixtures / "notifications.jsonl").read_text(encoding="utf-8").splitlines() if line]
cases = [(r["headers"], r["body"].encode(), json.loads(r["plaintext"])) for r in records]

# The library wants a merchant key for requests it will not make here.
merchant = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
    serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()
pay = WeChatPay(wechatpay_type=WeChatPayType.NATIVE, mchid=meta["mchid"], private_key=merchant,
                cert_serial_no="UNUSED", appid=meta["appid"], apiv3_key=meta["apiv3_key"],
                public_key=(fixtures / "platform_public_key.pem").read_text(),
                public_key_id=meta["serial"])

for headers, body, plaintext in cases:
    result = pay.callback(headers, body)
    assert result and result["resource"] == plaintext, "wechatpayv3 did not accept a genuine notification"
headers, body, _ = cases[0]
assert pay.callback(headers, body.replace(b"TRANSACTION", b"TRANSACTIOM")) is None, "tampering accepted"

samples = []
deadline = time.perf_counter() + seconds
while time.perf_counter() < deadline or len(samples) < 3:
    start = time.perf_counter_ns()
    for headers, body, _ in cases:
        pay.callback(headers, body)
    samples.append((time.perf_counter_ns() - start) / len(cases))
print(f"wechatpayv3\t{statistics.median(samples):.0f}")
