// node --test: the verification page's logic (pagelib.mjs) on real bundles
// (tests/js/fixtures/bundles.json). tests/node/test_verify_page.py checks the receipts it
// builds against ledger.receipt.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";
import * as lib from "./pagelib.mjs";
import * as v from "./verify.mjs";

const fixture = JSON.parse(readFileSync(new URL("../../tests/js/fixtures/bundles.json", import.meta.url), "utf8"));

test("a pinned genesis hash: spaces and case ignored, anything else refused", () => {
  const h = "ab".repeat(32);
  assert.equal(lib.normalisePinnedHash(` ${h.toUpperCase().slice(0, 10)} ${h.slice(10)} `), h);
  assert.equal(lib.normalisePinnedHash("  "), null);
  assert.throws(() => lib.normalisePinnedHash("ab".repeat(31)), /64 hexadecimal/);
  assert.throws(() => lib.normalisePinnedHash("zz".repeat(32)), /64 hexadecimal/);
  lib.checkPinned(h, null);
  lib.checkPinned(h, h);
  assert.throws(() => lib.checkPinned(h, "cd".repeat(32)), /not the pinned/);
});

test("the JSON-RPC request carries only the commitment, and the key as a bearer token", () => {
  const c = "12".repeat(32);
  const { headers, body } = lib.proofRequest(c, " k3y ");
  assert.deepEqual(JSON.parse(body), { jsonrpc: "2.0", id: 1, method: "getAttestationProof", params: { commitment: c } });
  assert.equal(headers.Authorization, "Bearer k3y");
  assert.equal(lib.proofRequest(c, "").headers.Authorization, undefined);
  assert.deepEqual(lib.bundleFromResponse({ jsonrpc: "2.0", id: 1, result: { a: 1 } }), { a: 1 });
  assert.throws(() => lib.bundleFromResponse({ error: { code: -32002, message: "requires credentials" } }), /requires credentials/);
  assert.throws(() => lib.bundleFromResponse({ result: null }), /no proof bundle/);
  assert.throws(() => lib.bundleFromResponse({ error: "request body larger than 1 bytes" }), /refused: request body larger/);
});

test("every verdict: rows, checks and a receipt encoded as ledger.receipt encodes", async () => {
  const anchor = await v.anchorFromGenesisJson(fixture.genesis);
  for (const c of fixture.cases) {
    const verdict = await v.verifyBundle(c.bundle, anchor, { nowMs: fixture.now_ms, maxAgeMs: fixture.max_age_ms });
    assert.ok(lib.receiptOffered(verdict), c.name);
    assert.equal(lib.checksPassed(verdict).length, 11);
    const rows = Object.fromEntries(lib.resultRows(verdict));
    assert.equal(rows["Head height"], String(verdict.height));
    if (verdict.status !== "NOT_FOUND") assert.equal(rows.Issuer, verdict.issuer);
    if (verdict.status === "REVOKED") {
      assert.equal(rows["Revocation reason"], lib.revokeReasonText(verdict.revoke_reason));
      // by the issuer, or by a consortium vote: the fixture holds both
      const want = verdict.revoke_proposal ? /^a consortium vote \(proposal [0-9a-f]{16}…, decided by [a-z]+'s vote\)$/ : /^its issuer, szcredit$/;
      assert.match(rows["Revoked by"], want, c.name);
    } else assert.equal(rows["Revoked by"], undefined);
    // a document bound to its data subject names the access it was verified under
    if (verdict.access) assert.match(rows["Access recorded"], /^at block \d+ \(.+Z\) under grant [0-9a-f]{16}… for loan-application, by hkbank$/, c.name);
    else assert.equal(rows["Access recorded"], undefined);
    const receipt = lib.buildReceipt({ bundle: c.bundle, verdict, genesisHash: anchor.genesisHash,
      commitmentHex: c.bundle.commitment, checkedAtMs: fixture.now_ms, maxAgeMs: fixture.max_age_ms });
    const text = lib.encodeReceipt(receipt);
    assert.ok(text.endsWith("}\n") && text.startsWith('{\n  "bundle": {'));
    assert.deepEqual(JSON.parse(text), receipt);
  }
});

test("a failed check: the ones before it passed, no receipt offered", async () => {
  const anchor = await v.anchorFromGenesisJson(fixture.genesis);
  const stale = await v.verifyBundle(fixture.cases[0].bundle, anchor, { nowMs: fixture.stale_now_ms, maxAgeMs: fixture.max_age_ms });
  assert.equal(stale.status, "UNVERIFIABLE");
  assert.equal(lib.checksPassed(stale).length, 4);
  assert.ok(!lib.receiptOffered(stale));
  assert.deepEqual(lib.checksPassed({ status: "INVALID", reason: "malformed", message: "x" }), []);
  assert.equal(lib.checksPassed({ status: "INVALID", reason: "signer_mismatch", message: "x" }).length, 8);
  assert.equal(lib.checksPassed({ status: "INVALID", reason: "governance_mismatch", message: "x" }).length, 9);
  assert.ok(lib.checksPassed({ status: "VALID", max_age_ms: null }).every((c) => !c.includes("fresh")));
});

test("non-ASCII is escaped as Python's json.dumps does", () => {
  assert.equal(lib.encodeReceipt({ b: "é€", a: [] }), '{\n  "a": [],\n  "b": "\\u00e9\\u20ac"\n}\n');
});

test("a saved receipt re-checked with no node: holds, or says what differs", async () => {
  const anchor = await v.anchorFromGenesisJson(fixture.genesis);
  const c = fixture.cases[0];
  const at = { nowMs: fixture.now_ms, maxAgeMs: fixture.max_age_ms };
  const verdict = await v.verifyBundle(c.bundle, anchor, at);
  const receipt = JSON.parse(lib.encodeReceipt(lib.buildReceipt({ bundle: c.bundle, verdict,
    genesisHash: anchor.genesisHash, commitmentHex: c.bundle.commitment, checkedAtMs: at.nowMs, maxAgeMs: at.maxAgeMs })));
  const ok = await lib.reverifyReceipt(receipt, anchor, c.bundle.commitment);
  assert.deepEqual([ok.holds, ok.verdict.status], [true, verdict.status]);
  const altered = structuredClone(receipt);
  altered.verdict.status = verdict.status === "VALID" ? "REVOKED" : "VALID";
  assert.deepEqual((await lib.reverifyReceipt(altered, anchor, c.bundle.commitment)).differing, ["status"]);
  await assert.rejects(lib.reverifyReceipt(receipt, anchor, "00".repeat(32)), /another document/);
  await assert.rejects(lib.reverifyReceipt({ ...receipt, genesis_hash: "00".repeat(32) }, anchor, c.bundle.commitment), /another one|not this one/);
  await assert.rejects(lib.reverifyReceipt({ ...receipt, version: 2 }, anchor, c.bundle.commitment), /version 2/);
  await assert.rejects(lib.reverifyReceipt({ ...receipt, extra: 1 }, anchor, c.bundle.commitment), /exactly the fields/);
  await assert.rejects(lib.reverifyReceipt({ ...receipt, checked_at_ms: 1.5 }, anchor, c.bundle.commitment), /wrong type/);
  const forged = structuredClone(receipt);
  forged.bundle.head.certificate = forged.bundle.head.certificate.replace(/.$/, (d) => (d === "0" ? "1" : "0"));
  const bad = await lib.reverifyReceipt(forged, anchor, c.bundle.commitment);
  assert.equal(bad.verdict.status, "INVALID");
  assert.ok(!bad.holds);
});

test("a revocation's reason in words, as dvp verify prints it", () => {
  assert.equal(lib.revokeReasonText(5), "data changed");
  assert.equal(lib.revokeReasonText(0), "unspecified");
  assert.equal(lib.revokeReasonText(99), "reason code 99");
  assert.equal(lib.revokeReasonText(null), null);
});

test("a bound document: the access is named, its consent's absence explained, its receipt re-checked", async () => {
  const anchor = await v.anchorFromGenesisJson(fixture.genesis);
  const bound = fixture.cases.find((c) => c.bundle.consent !== null);
  assert.ok(bound, "the fixture holds a bound document");
  const verdict = await v.verifyBundle(bound.bundle, anchor, { nowMs: fixture.now_ms, maxAgeMs: fixture.max_age_ms });
  assert.equal(verdict.access.purpose, "loan-application");
  const receipt = JSON.parse(lib.encodeReceipt(lib.buildReceipt({ bundle: bound.bundle, verdict, genesisHash: anchor.genesisHash,
    commitmentHex: bound.bundle.commitment, checkedAtMs: fixture.now_ms, maxAgeMs: fixture.max_age_ms })));
  const again = await lib.reverifyReceipt(receipt, anchor, bound.bundle.commitment);
  assert.ok(again.holds, again.differing.join());
  const altered = structuredClone(receipt);
  altered.verdict.access.purpose = "account-opening";
  assert.deepEqual((await lib.reverifyReceipt(altered, anchor, bound.bundle.commitment)).differing, ["access"]);
  const missing = await v.verifyBundle({ ...bound.bundle, consent: null }, anchor, { nowMs: fixture.now_ms, maxAgeMs: fixture.max_age_ms });
  assert.deepEqual([missing.status, missing.reason], ["UNVERIFIABLE", "consent_missing"]);
  assert.match(lib.verdictText(missing), /bound to its data subject/);
  assert.equal(lib.checksPassed(missing).length, 10);
  const { body } = lib.proofRequest(bound.bundle.commitment, "", ` ${"AB".repeat(32)} `);
  assert.deepEqual(JSON.parse(body).params, { commitment: bound.bundle.commitment, access: "ab".repeat(32) });
  assert.deepEqual(JSON.parse(lib.proofRequest(bound.bundle.commitment, "").body).params, { commitment: bound.bundle.commitment });
});
