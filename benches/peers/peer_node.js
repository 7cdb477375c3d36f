#!/usr/bin/env node
// Times Node's wechatpay-axios-plugin and wechatpay-node-v3 on gen_fixtures.py
// notifications, for benches/compare.sh.
//
// usage: node peer_node.js FIXTURE_DIR SECONDS
//
// Each library verifies (RSA-SHA256 over timestamp\nnonce\nbody\n), decrypts (AES-256-GCM)
// and parses the resource, the way its README shows. Correctness is checked first (genuine
// accepted with the right plaintext, tampered refused). Prints one line per library:
// "name<TAB>median ns per notification".
'use strict';
const fs = require('fs');
const path = require('path');
const { Rsa, Aes, Formatter } = require('wechatpay-axios-plugin');
const Pay = require('wechatpay-node-v3');

const dir = process.argv[2];
const seconds = Number(process.argv[3] || 3);
const meta = JSON.parse(fs.readFileSync(path.join(dir, 'meta.json'), 'utf8'));
const pem = fs.readFileSync(path.join(dir, 'platform_public_key.pem'), 'utf8');
const cases = fs.readFileSync(path.join(dir, 'notifications.jsonl'), 'utf8')
  .split('\n').filter(Boolean).map((line) => JSON.parse(line));

// wechatpay-axios-plugin: a KeyObject parsed once, as its README shows.
const publicKey = Rsa.from(pem, Rsa.KEY_TYPE_PUBLIC);
function axiosPlugin(n) {
  const h = n.headers;
  const message = Formatter.response(h['Wechatpay-Timestamp'], h['Wechatpay-Nonce'], n.body);
  if (!Rsa.verify(message, h['Wechatpay-Signature'], publicKey)) return null;
  const r = JSON.parse(n.body).resource;
  return JSON.parse(Aes.AesGcm.decrypt(r.ciphertext, meta.apiv3_key, r.nonce, r.associated_data));
}

// wechatpay-node-v3: the platform key registered under the serial, so nothing is downloaded.
const pay = new Pay({
  appid: meta.appid, mchid: meta.mchid, serial_no: 'UNUSED',
  publicKey: Buffer.from('unused'), privateKey: Buffer.from('unused'), key: meta.apiv3_key,
});
Pay.certificates[meta.serial] = pem;
async function nodeV3(n) {
  const h = n.headers;
  const ok = await pay.verifySign({
    timestamp: h['Wechatpay-Timestamp'], nonce: h['Wechatpay-Nonce'], body: n.body,
    serial: h['Wechatpay-Serial'], signature: h['Wechatpay-Signature'], apiSecret: meta.apiv3_key,
  });
  if (!ok) return null;
  const r = JSON.parse(n.body).resource;
  return pay.decipher_gcm(r.ciphertext, r.associated_data, r.nonce, meta.apiv3_key);
}

const median = (xs) => { const s = [...xs].sort((a, b) => a - b); const m = s.length >> 1; return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2; };

async function time(run) {
  const samples = [];
  const end = process.hrtime.bigint() + BigInt(Math.round(seconds * 1e9));
  while (process.hrtime.bigint() < end || samples.length < 3) {
    const start = process.hrtime.bigint();
    for (const n of cases) await run(n);
    samples.push(Number(process.hrtime.bigint() - start) / cases.length);
  }
  return median(samples);
}

async function main() {
  for (const n of cases) {
    const want = n.plaintext;
    if (JSON.stringify(axiosPlugin(n)) !== JSON.stringify(JSON.parse(want))) throw new Error('axios-plugin mismatch');
    if (JSON.stringify(await nodeV3(n)) !== JSON.stringify(JSON.parse(want))) throw new Error('node-v3 mismatch');
  }
  const bad = { ...cases[0], body: cases[0].body.replace('TRANSACTION', 'TRANSACTIOM') };
  if (axiosPlugin(bad) !== null || (await nodeV3(bad)) !== null) throw new Error('tampering accepted');
  console.log(`wechatpay-axios-plugin\t${(await time(async (n) => axiosPlugin(n))).toFixed(0)}`);
  console.log(`wechatpay-node-v3\t${(await time(nodeV3)).toFixed(0)}`);
}
main().catch((e) => { console.error(e); process.exit(1); });
