#!/usr/bin/env python3
"""Writes the seed corpus under fuzz/seeds/ from the shared vectors (tests/vectors).

Run from anywhere: python3 fuzz/make_seeds.py. The output is committed; rerun it only when
the vectors or a target's input format change.
"""
import base64
import json
import pathlib

root = pathlib.Path(__file__).resolve().parent
vectors = root.parent / "tests" / "vectors"
seeds = root / "seeds"
cases = json.loads((vectors / "cases.json").read_text())["cases"]


def write(target, name, data):
    folder = seeds / target
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_bytes(data)


def head(headers):
    return "".join(f"{name}: {value}\n" for name, value in headers).encode()


for case in cases:
    body = base64.b64decode(case["body_base64"])
    # As received (flags 0: handler acknowledges), and re-signed with the test key
    # (flag 1), so the body reaches decryption even after mutation.
    write("layer", case["name"], b"\x00" + head(case["headers"]) + b"\n" + body)
    write("layer", case["name"] + "_resigned", b"\x01" + b"\n\n" + body)
    write("envelope", case["name"], body)
    if "resource" in case:
        envelope = json.loads(body)
        resource = envelope["resource"]
        nonce = resource["nonce"].encode()
        ad = (resource.get("associated_data") or "").encode()
        kind = {"transaction": 0, "refund": 1}.get(resource.get("original_type"), 3)
        plaintext = json.dumps(case["resource"], ensure_ascii=False).encode()
        flags = 1 | (kind << 4)
        write("decrypt", case["name"], bytes([flags, len(nonce), len(ad)]) + nonce + ad + plaintext)

keys = vectors / "keys"
for pem in sorted(keys.glob("*.pem")):
    text = pem.read_bytes()
    write("keys", pem.stem + "_pem", b"\x00" + text)
    lines = [l for l in text.decode().splitlines() if l and not l.startswith("-----")]
    der = base64.b64decode("".join(lines))
    selector = 1 if b"CERTIFICATE" in text else 2
    write("keys", pem.stem + "_der", bytes([selector]) + der)
