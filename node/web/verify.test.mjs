// node --test: the JavaScript verifier (verify.mjs) against the test vectors in
// tests/vectors/ and against the reference verifier's answers on real bundles
// (tests/js/fixtures/bundles.json, written by tests/js/make_fixtures.py).
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";
import * as v from "./verify.mjs";

const root = new URL("../../", import.meta.url);
const load = (path) => JSON.parse(readFileSync(new URL(path, root), "utf8"));
const fixture = load("tests/js/fixtures/bundles.json");
const u = (s) => v.unhex(s);

function mutate(doc, path) { // tests/support/bundles.py mutate(): one leaf changed
  const d = structuredClone(doc);
  let parent = d;
  for (const k of path.slice(0, -1)) parent = parent[k];
  const k = path[path.length - 1], x = parent[k];
  if (typeof x === "boolean") parent[k] = !x;
  else if (typeof x === "number") parent[k] = x + 1;
  else if (typeof x === "string" && x && /^[0-9a-f]+$/.test(x)) {
    const i = Math.floor(x.length / 2);
    parent[k] = x.slice(0, i) + (x[i] !== "0" ? "0" : "1") + x.slice(i + 1);
  } else parent[k] = x + "x";
  return d;
}
const withoutMessage = ({ message, ...rest }) => rest;

test("conformance vectors (tests/vectors/bundles.json): every expected result", async () => {
  const conf = load("tests/vectors/bundles.json");
  const anchor = await v.anchorFromGenesisJson(conf.genesis);
  assert.equal(anchor.genesisHash, conf.genesis.genesis_hash);
  assert.ok(conf.vectors.length > 10);
  for (const vec of conf.vectors) {
    const got = await v.verifyBundle(vec.bundle, anchor, { nowMs: vec.now_ms, maxAgeMs: vec.max_age_ms });
    const want = vec.expect;
    const mine = want.status === "INVALID" || want.status === "UNVERIFIABLE" ? { status: got.status, reason: got.reason } : got;
    assert.deepEqual(mine, want, vec.name);
  }
});

test("genesis file gives the reference's genesis hash", async () => {
  const anchor = await v.anchorFromGenesisJson(fixture.genesis);
  assert.equal(anchor.genesisHash, fixture.genesis.genesis_hash);
  await assert.rejects(v.anchorFromGenesisJson({ ...fixture.genesis, genesis_time_ms: 1 }), /genesis_hash/);
});

test("every bundle: the reference's verdict, fresh and stale", async () => {
  const anchor = await v.anchorFromGenesisJson(fixture.genesis);
  const seen = new Set();
  for (const c of fixture.cases) {
    const got = await v.verifyBundle(c.bundle, anchor, { nowMs: fixture.now_ms, maxAgeMs: fixture.max_age_ms });
    assert.deepEqual(got, c.expected, c.name);
    seen.add(got.status);
    const stale = await v.verifyBundle(c.bundle, anchor, { nowMs: fixture.stale_now_ms, maxAgeMs: fixture.max_age_ms });
    assert.deepEqual(withoutMessage(stale), c.stale, `${c.name} stale`);
    const audit = await v.verifyBundle(c.bundle, anchor, { nowMs: fixture.stale_now_ms, maxAgeMs: null });
    assert.notEqual(audit.status, "UNVERIFIABLE", `${c.name} with freshness off`);
  }
  assert.deepEqual([...seen].sort(), ["EXPIRED", "NOT_FOUND", "REVOKED", "VALID"]);
});

test("every one-field mutation: refused with the reference's reason", async () => {
  const anchor = await v.anchorFromGenesisJson(fixture.genesis);
  for (const c of fixture.cases) {
    for (const [path, expected] of c.mutations) {
      const got = await v.verifyBundle(mutate(c.bundle, path), anchor, { nowMs: fixture.now_ms, maxAgeMs: fixture.max_age_ms });
      assert.deepEqual(withoutMessage(got), expected, `${c.name} ${path.join(".")}`);
    }
  }
});

test("every part left out or borrowed from another bundle: the reference's answer", async () => {
  const anchor = await v.anchorFromGenesisJson(fixture.genesis);
  let n = 0;
  for (const c of fixture.cases) {
    for (const [part, value, expected] of c.swaps) {
      const got = await v.verifyBundle({ ...c.bundle, [part]: value }, anchor, { nowMs: fixture.now_ms, maxAgeMs: fixture.max_age_ms });
      assert.deepEqual(withoutMessage(got), expected, `${c.name} ${part}`);
      n++;
    }
  }
  assert.ok(n >= 15);
});

// A record or proposal is decoded only after its state proof verified, so a malformed one
// takes a forged head to reach the verifier: its decoders are tested directly.
test("records decode strictly: revocation fields empty until revoked (PROOFS.md §6)", () => {
  const rec = (name) => v.decodeCanonical(u(fixture.cases.find((c) => c.name === name).bundle.record));
  const [valid, revoked] = [rec("valid"), rec("revoked")];
  const decodes = (f) => v.decodeRecord(v.enc(f));
  assert.equal(decodes(valid).revokedHeight, 0);
  assert.equal(decodes(revoked).revoker, revoked[9]);
  const bad = [
    valid.slice(0, 8), [...valid, 0],
    Object.assign([...valid], { 1: valid[1].slice(1) }), // issuer_key 31 bytes
    Object.assign([...valid], { 7: 1 }), Object.assign([...valid], { 8: 1 }), // reason, position
    Object.assign([...valid], { 9: "szcredit" }), Object.assign([...valid], { 10: new Uint8Array(32) }),
    Object.assign([...valid], { 10: "" }), // the empty key is bin, not text
    Object.assign([...revoked], { 9: "" }), Object.assign([...revoked], { 10: new Uint8Array(0) }),
    Object.assign([...revoked], { 9: "Bad Id" }), Object.assign([...revoked], { 7: 256 }),
  ];
  for (const f of bad) assert.throws(() => decodes(f), (e) => e.reason === "malformed", JSON.stringify(f.map(String)));
});

test("proposal records decode strictly: known action and args, sorted unique votes, status 0-3", () => {
  const gov = fixture.cases.find((c) => c.name === "revoked_by_governance").bundle;
  const f = v.decodeCanonical(u(gov.proposal.record));
  const decodes = (g) => v.decodeProposal(v.enc(g));
  assert.equal(decodes(f).status, 1);
  assert.ok(f[4].length >= 2, "a proposal decided by several yes votes");
  const bad = [
    f.slice(0, 7), Object.assign([...f], { 6: 4 }), Object.assign([...f], { 0: 12 }),
    Object.assign([...f], { 1: [f[1][0]] }), Object.assign([...f], { 1: [f[1][0], 7] }), // reason 7 unknown
    Object.assign([...f], { 4: [...f[4]].reverse() }), Object.assign([...f], { 4: [f[4][0], f[4][0]] }),
    Object.assign([...f], { 5: [1] }), Object.assign([...f], { 2: "" }),
  ];
  for (const g of bad) assert.throws(() => decodes(g), (e) => e.reason === "malformed", JSON.stringify(g.map(String)));
});

test("transactions in a bundle without a record are refused, not ignored", async () => {
  const anchor = await v.anchorFromGenesisJson(fixture.genesis);
  const absent = fixture.cases.find((c) => c.name === "absent").bundle;
  const valid = fixture.cases.find((c) => c.name === "valid").bundle;
  const got = await v.verifyBundle({ ...absent, attest: valid.attest }, anchor, { nowMs: fixture.now_ms });
  assert.equal(got.reason, "malformed");
});

test("a bundle judged against another consortium's genesis is refused", async () => {
  const other = structuredClone(fixture.genesis);
  delete other.genesis_hash;
  other.validators = other.validators.slice(1);
  const anchor = await v.anchorFromGenesisJson(other);
  const got = await v.verifyBundle(fixture.cases[0].bundle, anchor, { nowMs: fixture.now_ms });
  assert.equal(got.status, "INVALID");
});

test("merkle.json: RFC 6962 inclusion vectors", async () => {
  let n = 0;
  for (const tree of load("tests/vectors/merkle.json").trees) {
    for (const c of tree.inclusion) {
      const ok = await v.verifyInclusion(u(c.leaf), c.leaf_index, c.tree_size, c.proof.map(u), u(c.root));
      assert.equal(ok, c.valid, `${tree.name} ${c.leaf_index}/${c.tree_size}`);
      n++;
    }
  }
  assert.ok(n > 10);
});

test("smt.json: state proof vectors", async () => {
  const smt = load("tests/vectors/smt.json");
  let n = 0;
  for (const c of smt.proofs) {
    let ok;
    try {
      const proof = v.parseStateProof(c.proof);
      ok = await v.verifyStateProof(u(c.root), u(c.key), c.value === null ? null : u(c.value), proof);
    } catch (e) {
      if (!(e instanceof v.VerificationError)) throw e;
      ok = false;
    }
    assert.equal(ok, c.valid, c.name);
    n++;
  }
  assert.ok(n > 5);
});

test("ledger.json: canonical encodings, ids and signatures", async () => {
  const led = load("tests/vectors/ledger.json");
  const tag = (t, b) => v.concat(new TextEncoder().encode(t), new Uint8Array([0]), b);
  for (const t of led.transactions) {
    const body = u(t.body), tx = v.decodeCanonical(u(t.encoded), 4096);
    assert.deepEqual(v.enc(v.decodeCanonical(body)), body, "the library re-encodes the body byte for byte");
    assert.deepEqual(tag("dvp/tx/v1", body), u(t.signing_message));
    assert.ok(await v.ed25519Verify(tx[1], u(t.signing_message), u(t.signature)));
    assert.ok(!(await v.ed25519Verify(tx[1], u(t.body), u(t.signature))));
    assert.equal(v.hex(await v.sha256(tag("dvp/txid/v1", u(t.encoded)))), t.tx_id);
  }
  assert.equal(v.hex(await v.sha256(tag("dvp/valset/v1", u(led.validator_set.encoded)))), led.validator_set.hash);
  assert.equal(v.hex(await v.sha256(tag("dvp/block/v1", u(led.header.encoded)))), led.header.block_id);
  const cert = v.decodeCanonical(u(led.certificate.encoded));
  const valset = v.decodeCanonical(u(led.validator_set.encoded));
  assert.deepEqual(v.enc(["dvp-demo", cert[0], cert[1], cert[2]]), u(led.certificate.commit_vote_body));
  for (const [i, sig] of cert[3]) assert.ok(await v.ed25519Verify(valset[i][1], u(led.certificate.signing_message), sig));
  const c = led.commitment;
  const commitment = await v.sha256(v.concat(new TextEncoder().encode("dvp/doc/v1"), u(c.salt), await v.sha256(u(c.file_hex))));
  assert.equal(v.hex(commitment), c.commitment);
  assert.equal(v.hex(await v.stateKey("attestation", commitment)), led.state.attestation_key);
  assert.equal(v.hex(await v.stateKey("member", "cnix")), led.state.member_key_cnix);
  assert.equal(v.hex(await v.stateKey("chain", new Uint8Array(0))), led.state.chain_key);
  assert.throws(() => v.decodeCanonical(new Uint8Array([0xcd, 0x00, 0x05])), /canonical/);
  assert.throws(() => v.decodeCanonical(new Uint8Array([0x05, 0x05])), v.VerificationError);
  assert.throws(() => v.decodeCanonical(new Uint8Array([0x80])), v.VerificationError);
});

test("uint64 beyond 2^53 (a nonce of 63 random bits, as the CLI draws) decodes exactly", () => {
  const big = new Uint8Array([0x92, 0xcf, 0x7d, 0xd9, 0x3d, 0x8d, 0x70, 0x41, 0x6c, 0x63, 0xcf, 0, 0, 1, 0xa2, 0x4e, 0x4d, 0xa1, 0x4d]);
  const obj = v.decodeCanonical(big);
  assert.deepEqual(obj, [0x7dd93d8d70416c63n, 1796610040141]);
  assert.deepEqual(v.enc(obj), big);
  assert.throws(() => v.decodeCanonical(new Uint8Array([0xcf, 0, 0, 0, 0, 0, 0, 0, 5])), /canonical/);
  assert.throws(() => v.decodeCanonical(new Uint8Array([0xd3, 0xff, 0, 0, 0, 0, 0, 0, 5])), v.VerificationError);
});

test("Ed25519 is as strict as libsodium: small-order keys and R refused", async () => {
  // WebCrypto alone accepts this forgery (identity key and R, S = 0) for any message.
  const key = new Uint8Array(32); key[0] = 1;
  const sig = new Uint8Array(64); sig[0] = 1;
  assert.equal(await v.ed25519Verify(key, new Uint8Array([1, 2, 3]), sig), false);
  const big = new Uint8Array(32).fill(0xff); big[31] = 0x7f; // y = 2^255 - 1 >= p: not canonical
  assert.equal(await v.ed25519Verify(big, new Uint8Array([1]), new Uint8Array(64)), false);
});

test("ledger.json: the commitment from the file and its verification code", async () => {
  const c = load("tests/vectors/ledger.json").commitment;
  const code = c.verification_code;
  assert.equal(v.hex(await v.decodeCode(code)), c.salt);
  assert.equal(v.hex(await v.commitmentOf(u(c.file_hex), code)), c.commitment);
  const sloppy = code.toLowerCase().replace(/-/g, " ").replace(/0/g, "o").replace(/1/g, "l");
  assert.equal(v.hex(await v.commitmentOf(u(c.file_hex), sloppy)), c.commitment);
  const typo = code.slice(0, 5) + (code[5] === "A" ? "B" : "A") + code.slice(6);
  await assert.rejects(v.decodeCode(typo), /typos/);
  await assert.rejects(v.decodeCode(code.slice(1)), /56 characters/);
  await assert.rejects(v.decodeCode(code.replace(/^./, "U")), /56 characters/);
});

test("the caller's clock and limit are checked", async () => {
  const anchor = await v.anchorFromGenesisJson(fixture.genesis);
  await assert.rejects(v.verifyBundle(fixture.cases[0].bundle, anchor, { nowMs: fixture.now_ms, maxAgeMs: -1 }), RangeError);
});
