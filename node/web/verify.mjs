// dvp proof-bundle verifier in JavaScript: docs/PROOFS.md §11 in the browser or Node.
//
// Owns: the checks a bank's verifier makes on a proof bundle against a genesis it trusts,
// with no server dependency: the genesis file → trust anchor (§5), strict canonical
// msgpack decoding (§2), headers, certificates and Ed25519 signatures (§4), RFC 6962
// inclusion proofs (proofs-merkle.md §3), the sparse Merkle state proof (proofs-smt.md
// §5–§6), the records' signers and a governance revocation's yes votes counted against the
// validator set in force (§6, §11 steps 4–5, bundle version 3), the recorded access under
// the data subject's consent for a bound document (§11 step 6, docs/CONSENT.md §5), and
// the record → verdict rules with freshness (§6, §11). It answers in the JSON
// form ledger/verify.py gives (Verdict.to_json / VerificationError.to_json), without
// `message` wording parity. Crypto is WebCrypto (SHA-256, Ed25519: Node >= 20, current
// browsers); msgpack is the vendored @msgpack/msgpack (vendor/VENDOR.md).
// Entry points: anchorFromGenesisJson(doc), commitmentOf(fileBytes, code),
// verifyBundle(doc, anchor, {nowMs, maxAgeMs}).
import { decode, encode } from "./vendor/msgpack/index.mjs";

const subtle = globalThis.crypto.subtle;
export const DEFAULT_MAX_AGE_MS = 30_000;
const MAX_TX = 4096, MAX_HEADER = 4096, MAX_OBJECT = 65536, MAX_VALIDATORS = 256;
const IDENT = /^[a-z0-9\-_.]{1,64}$/;
const ATTEST = 1, REVOKE = 2, GOV_PROPOSE = 3, GOV_VOTE = 4, CONSENT_GRANT = 5, CONSENT_REVOKE = 6, ACCESS = 7;
// Reasons that are no verdict on a sound proof (ledger/verify.py UNVERIFIABLE_REASONS).
const UNVERIFIABLE = ["state_too_old", "consent_missing"];
const REVOKE_ATTESTATION = 11, APPROVED = 1, MAX_REASON = 6, MAX_ROLE = 4, MAX_VOTES = 256;

/** No verdict: `reason` is one of ledger/verify.py's Reason values. */
export class VerificationError extends Error {
  constructor(reason, message) { super(`${reason}: ${message}`); this.reason = reason; this.detail = message; this.head = null; }
}
const fail = (reason, message) => new VerificationError(reason, message);

// ------------------------------------------------------------------ bytes and hashes
const te = new TextEncoder();
export const hex = (b) => Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
export function unhex(s, what = "value") {
  if (typeof s !== "string" || !/^(?:[0-9a-f]{2})*$/.test(s)) throw fail("malformed", `${what} must be lowercase hex`);
  const out = new Uint8Array(s.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(s.slice(2 * i, 2 * i + 2), 16);
  return out;
}
export const concat = (...parts) => {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let o = 0;
  for (const p of parts) { out.set(p, o); o += p.length; }
  return out;
};
const eq = (a, b) => a.length === b.length && a.every((x, i) => x === b[i]);
export const sha256 = async (data) => new Uint8Array(await subtle.digest("SHA-256", data));
const tagged = (tag, body) => concat(te.encode(tag), new Uint8Array([0]), body);

// ------------------------------------------------------------------ §2 canonical encoding
// A uint64 is read exactly (useBigInt64): a transaction's nonce is any 64-bit value (the
// CLI draws 63 random bits). Integers that fit a double exactly are numbers; a larger one
// stays a BigInt (only a nonce may be one: decodeTx). For encoding, every integer >= 2^32
// goes through BigInt, so it is written as uint64 (its shortest form) exactly.
const BIG = { useBigInt64: true };
const fromBig = (x) => Array.isArray(x) ? x.map(fromBig)
  : typeof x === "bigint" && x >= 0n && x <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(x) : x;
const toBig = (x) => Array.isArray(x) ? x.map(toBig)
  : typeof x === "number" && Number.isInteger(x) && x >= 2 ** 32 ? BigInt(x) : x;
export const enc = (obj) => encode(toBig(obj), BIG);

function onlyAllowed(x) {
  if (Array.isArray(x)) return x.forEach(onlyAllowed);
  if (typeof x === "boolean" || typeof x === "string" || x instanceof Uint8Array) return;
  if (typeof x === "number" && Number.isSafeInteger(x) && x >= 0) return;
  if (typeof x === "bigint" && x >= 0n) return; // a uint64 beyond 2^53 (decoded from 0xcf)
  throw fail("malformed", "a value the encoding does not use (map, float, nil, negative, extension)");
}

/** Strict decode: size limit, no trailing bytes, only arrays/uint/bool/bin/str, and the
 *  bytes must re-encode identically. A uint64 beyond 2^53 is a BigInt. */
export function decodeCanonical(data, limit = MAX_OBJECT) {
  if (data.length > limit) throw fail("malformed", "over the size limit");
  let obj;
  try { obj = fromBig(decode(data, BIG)); } catch (e) { throw fail("malformed", `msgpack: ${e.message}`); }
  onlyAllowed(obj);
  if (!eq(enc(obj), data)) throw fail("malformed", "not the canonical encoding");
  return obj;
}
const arr = (x, n, what) => {
  if (!Array.isArray(x) || (n !== null && x.length !== n)) throw fail("malformed", `${what} must be an array${n ? ` of ${n}` : ""}`);
  return x;
};
const uint = (x, what) => { if (typeof x !== "number") throw fail("malformed", `${what} must be an unsigned integer`); return x; };
const bin = (x, what, ...sizes) => {
  if (!(x instanceof Uint8Array) || (sizes.length && !sizes.includes(x.length))) throw fail("malformed", `${what} must be bin`);
  return x;
};
const ident = (x, what) => { if (typeof x !== "string" || !IDENT.test(x)) throw fail("malformed", `${what} must be an identifier`); return x; };
// Strings compare by code point, as Python's do (JS `<` compares UTF-16 units).
const before = (a, b) => (typeof a === "string" ? cmpCodePoints(a, b) < 0 : a < b);
function cmpCodePoints(a, b) {
  const x = [...a], y = [...b];
  for (let i = 0; i < Math.min(x.length, y.length); i++) {
    const d = x[i].codePointAt(0) - y[i].codePointAt(0);
    if (d) return d;
  }
  return x.length - y.length;
}
const increasing = (xs, what) => { for (let i = 1; i < xs.length; i++) if (!before(xs[i - 1], xs[i])) throw fail("malformed", `${what} must strictly increase`); };

// ------------------------------------------------------------------ §1 commitment and code
const CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/** The salt in a verification code (§1): case, spaces and '-' ignored, O read as 0 and
 *  I/L as 1; throws CodeError on a malformed code or a checksum mismatch (a typo). */
export class CodeError extends Error {}
export async function decodeCode(code) {
  const norm = code.toUpperCase().replace(/[\s-]/g, "").replace(/O/g, "0").replace(/[IL]/g, "1");
  if (norm.length !== 56 || [...norm].some((ch) => !CROCKFORD.includes(ch)))
    throw new CodeError("a verification code has 56 characters of 0-9 and A-Z (no I, L, O, U)");
  let n = 0n;
  for (const ch of norm) n = (n << 5n) | BigInt(CROCKFORD.indexOf(ch));
  const raw = unhex(n.toString(16).padStart(70, "0"));
  const salt = raw.subarray(0, 32);
  const check = (await sha256(concat(te.encode("dvp/code/v1"), salt))).subarray(0, 3);
  if (!eq(check, raw.subarray(32))) throw new CodeError("the verification code's checksum does not match: check it for typos");
  return salt;
}

/** §1: commitment = H("dvp/doc/v1" ‖ salt ‖ H(file bytes)), from the file and its code. */
export async function commitmentOf(fileBytes, code) {
  const salt = await decodeCode(code);
  return sha256(concat(te.encode("dvp/doc/v1"), salt, await sha256(fileBytes)));
}

// ------------------------------------------------------------------ §3–§6 objects
async function decodeHeader(raw, chainId, what) {
  const f = arr(decodeCanonical(raw, MAX_HEADER), 12, what);
  const version = uint(f[0], "version");
  if (version < 1 || version > 0xffff) throw fail("malformed", `${what} version ${version} is outside 1..65535`);
  const height = uint(f[2], "height");
  ident(f[1], "chain_id"); bin(f[3], "prev_block_id", 32); bin(f[5], "proposer", ...(height === 0 ? [0, 32] : [32]));
  const h = { version, chainId: f[1], height, timeMs: uint(f[4], "time_ms"), txCount: uint(f[6], "tx_count"),
    txRoot: bin(f[7], "tx_root", 32), stateRoot: bin(f[8], "state_root", 32), valsetHash: bin(f[9], "validator_set_hash", 32),
    nextValsetHash: bin(f[10], "next_validator_set_hash", 32), historyRoot: bin(f[11], "history_root", 32),
    blockId: await sha256(tagged("dvp/block/v1", raw)) };
  if (h.chainId !== chainId) throw fail("wrong_chain", `${what} is for chain ${h.chainId}`);
  return h;
}

async function decodeValidatorSet(raw) {
  const entries = arr(decodeCanonical(raw), null, "validator set").map((v) => arr(v, 2, "validator"));
  if (entries.length > MAX_VALIDATORS) throw fail("malformed", "too many validators");
  const members = entries.map((v) => ident(v[0], "member_id"));
  increasing(members, "validator ids");
  return { members, keys: entries.map((v) => bin(v[1], "node_key", 32)), hash: await sha256(tagged("dvp/valset/v1", raw)),
    quorum: Math.floor((2 * entries.length) / 3) + 1 };
}

// PROOFS.md §2: like libsodium's crypto_sign_open, refuse small-order keys and R values
// and non-canonical key encodings, which WebCrypto (OpenSSL) accepts; OpenSSL already
// refuses a non-canonical S. The encodings of the small-order points (libsodium's
// ge25519_has_small_order list, compared with the sign bit ignored):
const SMALL_ORDER = [
  "0000000000000000000000000000000000000000000000000000000000000000",
  "0100000000000000000000000000000000000000000000000000000000000000",
  "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05",
  "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a",
  "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
  "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
  "eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
];
const P25519 = (1n << 255n) - 19n;
function smallOrderOrNonCanonical(point) {
  const y = Uint8Array.from(point); y[31] &= 0x7f;
  const asInt = BigInt("0x" + hex(y.slice().reverse()));
  return asInt >= P25519 || SMALL_ORDER.includes(hex(y));
}

const keyCache = new Map();
/** RFC 8032 Ed25519 through WebCrypto, as strict as libsodium (false for a key or
 *  signature it cannot use). */
export async function ed25519Verify(key, message, signature) {
  if (key.length !== 32 || signature.length !== 64) return false;
  if (smallOrderOrNonCanonical(key) || smallOrderOrNonCanonical(signature.subarray(0, 32))) return false;
  try {
    const k = hex(key);
    if (!keyCache.has(k)) keyCache.set(k, await subtle.importKey("raw", key, { name: "Ed25519" }, false, ["verify"]));
    return await subtle.verify({ name: "Ed25519" }, keyCache.get(k), signature, message);
  } catch { return false; }
}

/** §4: names the block's id and height; every listed signature verifies; >= quorum(n). */
async function checkCertificate(header, raw, vs, chainId, what) {
  const f = arr(decodeCanonical(raw), 4, `${what} certificate`);
  const [height, view, blockId] = [uint(f[0], "height"), uint(f[1], "view"), bin(f[2], "block_id", 32)];
  const sigs = arr(f[3], null, "signatures").map((p) => arr(p, 2, "signature entry"));
  if (sigs.length > MAX_VALIDATORS) throw fail("malformed", "too many signatures");
  sigs.forEach(([i, s]) => { uint(i, "validator index"); bin(s, "signature", 64); });
  increasing(sigs.map(([i]) => i), "certificate indexes");
  if (height !== header.height) throw fail("malformed", `${what} certificate is for height ${height}`);
  if (!eq(blockId, header.blockId)) throw fail("bad_signature", `${what} certificate names another block`);
  const message = tagged("dvp/commit/v1", enc([chainId, height, view, blockId]));
  for (const [i, s] of sigs) {
    if (i >= vs.keys.length) throw fail("bad_signature", `${what}: index ${i} outside the validator set`);
    if (!(await ed25519Verify(vs.keys[i], message, s))) throw fail("bad_signature", `${what}: signature ${i} does not verify`);
  }
  if (sigs.length < vs.quorum) throw fail("insufficient_quorum", `${what}: ${sigs.length} of ${vs.quorum} signatures`);
}

const upTo = (x, max, what) => { if (uint(x, what) > max) throw fail("malformed", `${what} is not a known code`); return x; };

// GOV_PROPOSE arguments per action (ledger/transaction.py GOV_ARGS): "id" identifier,
// "name" display text, "key"/"hash" 32 bytes, "int" uint, "role" and "reason" known codes.
const GOV_ARGS = [null, ["id", "name", "key"], ["id"], ["id", "role"], ["id", "role"], ["id", "id"], ["id", "id"],
  ["id", "key"], ["id", "key"], ["id"], ["id", "int"], ["hash", "reason"], ["id"], ["id"], ["int", "int"]];
const GOV_ARG = {
  id: (x, w) => ident(x, w),
  name: (x, w) => { if (typeof x !== "string" || [...x].length < 1 || [...x].length > 128) throw fail("malformed", `${w} must be 1-128 characters`); },
  key: (x, w) => bin(x, w, 32), hash: (x, w) => bin(x, w, 32), int: (x, w) => uint(x, w),
  role: (x, w) => { if (uint(x, w) < 1 || x > MAX_ROLE) throw fail("malformed", `${w} is not a known role`); },
  reason: (x, w) => upTo(x, MAX_REASON, w),
};
/** [action, args, deadline_height], in GOV_PROPOSE and in a proposal record. */
function checkGovPropose(action, args, deadline) {
  if (uint(action, "action") < 1 || action >= GOV_ARGS.length) throw fail("malformed", `unknown governance action ${action}`);
  arr(args, GOV_ARGS[action].length, "governance args").forEach((x, i) => GOV_ARG[GOV_ARGS[action][i]](x, `args[${i}]`));
  uint(deadline, "deadline_height");
}

async function decodeTx(raw) {
  const f = arr(decodeCanonical(raw, MAX_TX), 7, "transaction");
  ident(f[0], "chain_id"); bin(f[1], "sender", 32); if (typeof f[2] !== "bigint") uint(f[2], "nonce"); uint(f[3], "expiry_height");
  const kind = uint(f[4], "kind"), p = arr(f[5], null, "payload");
  if (kind === ATTEST) {
    arr(p, 6, "ATTEST payload"); ident(p[0], "doc_type"); bin(p[1], "commitment", 32);
    const [issued, until] = [uint(p[2], "issued_at_ms"), uint(p[3], "valid_until_ms")];
    if (until && until <= issued) throw fail("malformed", "valid_until_ms must be 0 or after issued_at_ms");
    bin(p[4], "metadata_digest", 0, 32); bin(p[5], "subject", 0, 32);
  } else if (kind === CONSENT_GRANT) {
    grantFields(arr(p, 6, "CONSENT_GRANT payload"));
  } else if (kind === CONSENT_REVOKE) {
    bin(arr(p, 1, "CONSENT_REVOKE payload")[0], "grant_id", 32);
  } else if (kind === ACCESS) {
    arr(p, 3, "ACCESS payload"); bin(p[0], "grant_id", 32); bin(p[1], "commitment", 32); ident(p[2], "purpose");
  } else if (kind === REVOKE) {
    arr(p, 2, "REVOKE payload"); bin(p[0], "commitment", 32); upTo(p[1], MAX_REASON, "reason");
  } else if (kind === GOV_PROPOSE) {
    checkGovPropose(...arr(p, 3, "GOV_PROPOSE payload"));
  } else if (kind === GOV_VOTE) {
    arr(p, 2, "GOV_VOTE payload"); bin(p[0], "proposal_id", 32);
    if (typeof p[1] !== "boolean") throw fail("malformed", "approve must be a boolean");
  } else throw fail("malformed", `unknown transaction kind ${kind}`);
  const signature = bin(f[6], "signature", 64);
  // §3: enc(Transaction) = 0x97 ‖ enc(body)[1:] ‖ 0xc4 0x40 ‖ signature
  const body = concat(new Uint8Array([0x96]), raw.subarray(1, raw.length - 66));
  return { chainId: f[0], sender: f[1], kind, payload: p, txId: await sha256(tagged("dvp/txid/v1", raw)),
    signatureOk: () => ed25519Verify(f[1], tagged("dvp/tx/v1", body), signature) };
}

/** §3 CONSENT_GRANT: [grantee, commitments (1-16, increasing), purpose, not_before_ms,
 *  not_after_ms (> not_before_ms), max_uses (1-100)]; also the grant record's fields 1-6. */
function grantFields(p) {
  ident(p[0], "grantee");
  const docs = arr(p[1], null, "grant commitments");
  if (docs.length < 1 || docs.length > 16) throw fail("malformed", "a grant names 1-16 documents");
  docs.forEach((c) => bin(c, "grant commitment", 32));
  for (let i = 1; i < docs.length; i++) if (!bytesBefore(docs[i - 1], docs[i])) throw fail("malformed", "grant commitments must strictly increase");
  ident(p[2], "purpose");
  if (uint(p[4], "not_after_ms") <= uint(p[3], "not_before_ms")) throw fail("malformed", "not_after_ms must be after not_before_ms");
  if (uint(p[5], "max_uses") < 1 || p[5] > 100) throw fail("malformed", "max_uses must be 1-100");
}
function bytesBefore(a, b) {
  for (let i = 0; i < Math.min(a.length, b.length); i++) if (a[i] !== b[i]) return a[i] < b[i];
  return a.length < b.length;
}

/** §6 "The grant record" (docs/CONSENT.md §2.3): [subject, grantee, commitments, purpose,
 *  not_before_ms, not_after_ms, max_uses, height, position, revoked_height,
 *  revoke_position, [[height, position, member_key]...]]. */
export function decodeGrant(raw) {
  const f = arr(decodeCanonical(raw), 12, "grant record");
  bin(f[0], "grant.subject", 32);
  grantFields(f.slice(1, 7));
  const accesses = arr(f[11], null, "grant.accesses").map((a) => {
    arr(a, 3, "access entry");
    return { height: uint(a[0], "access height"), position: uint(a[1], "access position"), memberKey: bin(a[2], "member_key", 32) };
  });
  if (accesses.length > f[6]) throw fail("malformed", "more accesses than max_uses");
  return { subject: f[0], payload: f.slice(1, 7), grantee: f[1], commitments: f[2], purpose: f[3], notBeforeMs: f[4],
    notAfterMs: f[5], maxUses: f[6], height: uint(f[7], "grant.height"), position: uint(f[8], "grant.position"),
    revokedHeight: uint(f[9], "grant.revoked_height"), revokePosition: uint(f[10], "grant.revoke_position"), accesses };
}

/** §6 "The attestation record": one encoding per record, so the revocation fields are
 *  exactly empty until revoked, and name a member and a 32-byte key once it is. */
export function decodeRecord(raw) {
  const f = arr(decodeCanonical(raw), 12, "attestation record");
  ident(f[0], "issuer"); bin(f[1], "issuer_key", 32); ident(f[2], "doc_type");
  const [validUntilMs, height, position, revokedHeight, revokeReason, revokePosition] = f.slice(3, 9).map((x) => uint(x, "record field"));
  if (revokeReason > 255) throw fail("malformed", "record.revoke_reason over 255");
  const [revoker, revokerKey] = [f[9], f[10]];
  if (typeof revoker !== "string") throw fail("malformed", "record.revoker must be text");
  if (revokedHeight) { ident(revoker, "record.revoker"); bin(revokerKey, "record.revoker_key", 32); }
  else if (revoker || revokeReason || revokePosition || !(revokerKey instanceof Uint8Array && revokerKey.length === 0))
    throw fail("malformed", "record: revocation fields set on a record that is not revoked");
  return { issuer: f[0], issuerKey: f[1], docType: f[2], validUntilMs, height, position, revokedHeight, revokeReason,
    revokePosition, revoker, revokerKey, subject: bin(f[11], "record.subject", 0, 32) };
}

/** §6 "The proposal record": [action, args, proposer, deadline_height, [yes ids], [no ids], status, decided_height]. */
export function decodeProposal(raw) {
  const f = arr(decodeCanonical(raw), 8, "proposal record");
  checkGovPropose(f[0], f[1], f[3]);
  const votes = (x, what) => {
    if (arr(x, null, what).length > MAX_VOTES) throw fail("malformed", `${what}: too many`);
    x.forEach((id) => { if (typeof id !== "string") throw fail("malformed", `${what} must be member ids`); });
    increasing(x, what);
    return x;
  };
  const [yes, no] = [votes(f[4], "proposal.yes"), votes(f[5], "proposal.no")];
  if (uint(f[6], "proposal.status") > 3) throw fail("malformed", "proposal.status must be 0-3");
  ident(f[2], "proposal.proposer");
  return { action: f[0], args: f[1], proposer: f[2], yes, no, status: f[6], decidedHeight: uint(f[7], "proposal.decided_height") };
}

export const stateKey = async (namespace, id) => sha256(tagged("dvp/statekey/v1", enc([namespace, id])));

// ------------------------------------------------------------------ RFC 6962 (proofs-merkle.md §3)
/** RFC 9162 §2.1.3.2: does `path` prove `leafData` at `index` in a tree of `size` with `root`? */
export async function verifyInclusion(leafData, index, size, path, root) {
  if (!(index >= 0 && index < size) || root.length !== 32 || path.some((p) => p.length !== 32)) return false;
  let fn = BigInt(index), sn = BigInt(size - 1);
  let r = await sha256(concat(new Uint8Array([0]), leafData));
  for (const p of path) {
    if (sn === 0n) return false;
    if (fn & 1n || fn === sn) {
      r = await sha256(concat(new Uint8Array([1]), p, r));
      if (!(fn & 1n)) while (!(fn & 1n) && fn !== 0n) { fn >>= 1n; sn >>= 1n; }
    } else {
      r = await sha256(concat(new Uint8Array([1]), r, p));
    }
    fn >>= 1n; sn >>= 1n;
  }
  return sn === 0n && eq(r, root);
}

// ------------------------------------------------------------------ state tree (proofs-smt.md §5–§6)
const LEAF_TAG = te.encode("dvp/smt/leaf/v1\0"), NODE_TAG = te.encode("dvp/smt/node/v1\0");
const nibble = (key, i) => (i % 2 === 0 ? key[i >> 1] >> 4 : key[i >> 1] & 0x0f);
const popcount = (x) => { let n = 0; for (; x; x &= x - 1) n++; return n; };
const isPlain = (x) => x !== null && typeof x === "object" && !Array.isArray(x);
const isObj = (x, keys) => isPlain(x) && Object.keys(x).length === keys.length && keys.every((k) => Object.hasOwn(x, k));
const hex32 = (x, what) => {
  if (typeof x !== "string" || !/^[0-9a-f]{64}$/.test(x)) throw fail("malformed", `${what} must be 64 lowercase hex digits`);
  return unhex(x);
};

/** proofs-smt.md §5.2 JSON form with the §5 structural rules. */
export function parseStateProof(doc) {
  if (!isObj(doc, ["terminal", "levels", "leaf_key", "leaf_value_hash"])) throw fail("malformed", "state proof fields");
  const { terminal } = doc;
  if (!["leaf", "empty", "other_leaf"].includes(terminal)) throw fail("malformed", "state proof terminal");
  if (!Array.isArray(doc.levels) || doc.levels.length > 64) throw fail("malformed", "state proof levels");
  const levels = doc.levels.map((lv, j) => {
    if (!isObj(lv, ["bitmap", "siblings"])) throw fail("malformed", "state proof level fields");
    const { bitmap } = lv;
    if (!Number.isInteger(bitmap) || bitmap < 1 || bitmap > 0xffff) throw fail("malformed", "bitmap");
    if (!Array.isArray(lv.siblings)) throw fail("malformed", "siblings");
    const siblings = lv.siblings.map((s) => hex32(s, "sibling"));
    const lastEmpty = terminal === "empty" && j === doc.levels.length - 1;
    if (siblings.length !== popcount(bitmap) - (lastEmpty ? 0 : 1)) throw fail("malformed", "sibling count");
    return { bitmap, siblings };
  });
  if (terminal === "empty") {
    if (doc.leaf_key !== null || doc.leaf_value_hash !== null) throw fail("malformed", "an empty terminal has no leaf");
    return { terminal, levels, leafKey: null, valueHash: null };
  }
  const leafKey = hex32(doc.leaf_key, "leaf_key"), valueHash = hex32(doc.leaf_value_hash, "leaf_value_hash");
  if (levels.length && popcount(levels[levels.length - 1].bitmap) < 2) throw fail("malformed", "a lone leaf under a node");
  return { terminal, levels, leafKey, valueHash };
}

/** proofs-smt.md §6: does the proof show key → value (null: absent) under root? */
export async function verifyStateProof(root, key, value, proof) {
  const { terminal, levels, leafKey, valueHash } = proof;
  const d = levels.length;
  let cur;
  if (terminal === "leaf") {
    if (value === null || !eq(leafKey, key) || !eq(valueHash, await sha256(value))) return false;
    cur = await sha256(concat(LEAF_TAG, key, valueHash));
  } else if (terminal === "other_leaf") {
    if (value !== null || eq(leafKey, key)) return false;
    for (let i = 0; i < d; i++) if (nibble(leafKey, i) !== nibble(key, i)) return false;
    cur = await sha256(concat(LEAF_TAG, leafKey, valueHash));
  } else {
    if (value !== null) return false;
    if (d === 0) return eq(root, new Uint8Array(32));
    cur = null;
  }
  for (let j = d - 1; j >= 0; j--) {
    const { bitmap, siblings } = levels[j], bit = 1 << nibble(key, j);
    let children;
    if (cur === null) {
      if (bitmap & bit) return false;
      children = siblings;
    } else {
      if (!(bitmap & bit)) return false;
      const r = popcount(bitmap & (bit - 1));
      children = [...siblings.slice(0, r), cur, ...siblings.slice(r)];
    }
    cur = await sha256(concat(NODE_TAG, new Uint8Array([bitmap >> 8, bitmap & 0xff]), ...children));
  }
  return eq(cur, root);
}

// ------------------------------------------------------------------ §5 genesis → anchor
const ROLES = { validator: 1, issuer: 2, verifier: 3, auditor: 4 };
const PARAMS = { max_block_txs: 2000, max_block_bytes: 2097152, heartbeat_ms: 5000, view_timeout_ms: 2000,
  checkpoint_interval: 16, pipeline_window: 4, tx_ttl_heights: 1000, validator_change_delay: 2, max_clock_drift_ms: 10000,
  subject_tx_limit: 20, subject_window_ms: 3600000 };
const DEFAULT_PURPOSES = ["account-opening", "loan-application"];
const cmpStr = (a, b) => (a < b ? -1 : a > b ? 1 : 0);
const sortedSet = (xs) => [...new Set(xs)].sort(cmpStr);
const numSet = (xs) => [...new Set(xs)].sort((a, b) => a - b);

/** §5 "From the file to Genesis": the trust anchor {chainId, validators, genesisHash}. Throws
 *  when the file's genesis_hash does not match its contents (an edited file). */
export async function anchorFromGenesisJson(doc) {
  const known = ["chain_id", "genesis_time_ms", "members", "validators", "doc_types", "params", "purposes", "genesis_hash"];
  for (const k of Object.keys(doc)) if (!known.includes(k)) throw new Error(`genesis file: unknown field ${k}`);
  for (const k of Object.keys(doc.params ?? {})) if (!(k in PARAMS)) throw new Error(`genesis file: unknown parameter ${k}`);
  const members = doc.members.map((m) => [m.id, m.name, unhex(m.key, "member key"),
    numSet((m.roles ?? []).map((r) => ROLES[r])), sortedSet(m.doc_types ?? [])]).sort((a, b) => cmpStr(a[0], b[0]));
  const validators = doc.validators.map((v) => [v.member_id, unhex(v.node_key, "node key")]).sort((a, b) => cmpStr(a[0], b[0]));
  const params = Object.entries(PARAMS).map(([n, dflt]) => doc.params?.[n] ?? dflt);
  const genesis = [doc.chain_id, doc.genesis_time_ms, members, validators, sortedSet(doc.doc_types), params,
    sortedSet(doc.purposes ?? DEFAULT_PURPOSES)];
  const genesisHash = hex(await sha256(tagged("dvp/genesis/v1", enc(genesis))));
  if (doc.genesis_hash !== undefined && doc.genesis_hash !== genesisHash) throw new Error("genesis file: genesis_hash does not match its contents");
  return { chainId: doc.chain_id, validators: await decodeValidatorSet(enc(validators)), genesisHash };
}

// ------------------------------------------------------------------ §11 the bundle
const BUNDLE_VERSION = 3;
const BUNDLE = ["version", "chain_id", "commitment", "head", "valset_changes", "record", "state_proof", "attest", "revoke", "proposal", "consent"];
const INCLUDED = ["tx", "header", "index", "tx_proof", "history_proof"];

function parseIncluded(x, what) {
  if (x === null) return null;
  if (!isObj(x, INCLUDED)) throw fail("malformed", `${what} fields`);
  if (!Number.isInteger(x.index) || x.index < 0) throw fail("malformed", `${what}.index`);
  const proof = (name) => {
    if (!Array.isArray(x[name]) || x[name].length > 64) throw fail("malformed", `${what}.${name}`);
    return x[name].map((h) => hex32(h, "proof hash"));
  };
  return { tx: unhex(x.tx, `${what}.tx`), header: unhex(x.header, `${what}.header`), index: x.index,
    txProof: proof("tx_proof"), historyProof: proof("history_proof") };
}

function parseProposalPart(x) {
  if (x === null) return null;
  if (!isObj(x, ["id", "record", "state_proof"])) throw fail("malformed", "proposal fields");
  if (!isPlain(x.state_proof)) throw fail("malformed", "proposal.state_proof must be an object");
  return { id: hex32(x.id, "proposal.id"), record: unhex(x.record, "proposal.record"), stateProof: x.state_proof };
}

function parseConsentPart(x) {
  if (x === null) return null;
  if (!isObj(x, ["grant_id", "record", "state_proof", "grant_tx", "access"])) throw fail("malformed", "consent fields");
  if (!isPlain(x.state_proof)) throw fail("malformed", "consent.state_proof must be an object");
  const grantTx = parseIncluded(x.grant_tx, "consent.grant_tx"), access = parseIncluded(x.access, "consent.access");
  if (grantTx === null || access === null) throw fail("malformed", "consent: grant_tx and access are required");
  return { grantId: hex32(x.grant_id, "consent.grant_id"), record: unhex(x.record, "consent.record"), stateProof: x.state_proof, grantTx, access };
}

/** The bundle's JSON shape (§10, §11): every field present, known and typed, or malformed. */
function parseBundle(doc) {
  if (!isObj(doc, BUNDLE)) throw fail("malformed", "bundle fields");
  if (doc.version !== BUNDLE_VERSION) throw fail("malformed", `version must be the integer ${BUNDLE_VERSION}`);
  if (typeof doc.chain_id !== "string") throw fail("malformed", "chain_id");
  const head = doc.head;
  if (!isObj(head, ["header", "certificate"])) throw fail("malformed", "head fields");
  if (!Array.isArray(doc.valset_changes) || doc.valset_changes.length > 10_000) throw fail("malformed", "valset_changes");
  const changes = doc.valset_changes.map((c) => {
    if (!isObj(c, ["header", "certificate", "next_validators"])) throw fail("malformed", "valset change fields");
    return { header: unhex(c.header, "change header"), certificate: unhex(c.certificate, "change certificate"),
      nextValidators: unhex(c.next_validators, "next_validators") };
  });
  const b = { chainId: doc.chain_id, commitment: hex32(doc.commitment, "commitment"),
    head: { header: unhex(head.header, "head.header"), certificate: unhex(head.certificate, "head.certificate") },
    changes, record: doc.record === null ? null : unhex(doc.record, "record"), stateProof: doc.state_proof,
    attest: parseIncluded(doc.attest, "attest"), revoke: parseIncluded(doc.revoke, "revoke") };
  if (!isPlain(b.stateProof)) throw fail("malformed", "state_proof must be an object");
  b.proposal = parseProposalPart(doc.proposal);
  b.consent = parseConsentPart(doc.consent);
  return b;
}

/** Step 1: follow the certified validator-set changes from the anchor to the head; the
 *  head and the sets in force along the way (`starts[i]`: the first height `sets[i]` certified). */
async function verifyHead(b, anchor) {
  const chain = anchor.chainId;
  if (b.chainId !== chain) throw fail("wrong_chain", `bundle is for chain ${b.chainId}`);
  let current = anchor.validators, last = -1;
  const starts = [0], sets = [current];
  const head = await decodeHeader(b.head.header, chain, "head header");
  for (const [i, c] of b.changes.entries()) {
    const h = await decodeHeader(c.header, chain, `valset change ${i}`);
    if (h.height <= last || h.height >= head.height) throw fail("validator_chain_broken", `valset change ${i} is out of order`);
    if (!eq(h.valsetHash, current.hash)) throw fail("validator_chain_broken", `header ${h.height}: a validator-set change is missing`);
    await checkCertificate(h, c.certificate, current, chain, `header ${h.height}`);
    const next = await decodeValidatorSet(c.nextValidators);
    if (!eq(next.hash, h.nextValsetHash)) throw fail("validator_chain_broken", `the set after height ${h.height} does not match its header`);
    current = next; last = h.height;
    starts.push(h.height + 1); sets.push(next);
  }
  if (!eq(head.valsetHash, current.hash)) throw fail("validator_chain_broken", "the head is certified by a set the chain did not lead to");
  await checkCertificate(head, b.head.certificate, current, chain, `head header ${head.height}`);
  return { head, starts, sets };
}

/** Steps 4–5: the transaction, its block, the tx root and the history root. */
async function included(inc, head, height, position, chain, what) {
  const tx = await decodeTx(inc.tx);
  if (tx.chainId !== chain) throw fail("wrong_chain", `${what} transaction is for chain ${tx.chainId}`);
  if (!(await tx.signatureOk())) throw fail("bad_signature", `${what} transaction signature does not verify`);
  const block = await decodeHeader(inc.header, chain, `${what} block header`);
  if (block.height !== height || inc.index !== position) throw fail("record_mismatch", `${what} is not at the record's height/position`);
  if (!(await verifyInclusion(tx.txId, position, block.txCount, inc.txProof, block.txRoot)))
    throw fail("tx_root_mismatch", `${what} transaction is not in block ${height}'s tx root`);
  if (block.height === head.height) {
    if (!eq(block.blockId, head.blockId) || inc.historyProof.length)
      throw fail("history_root_mismatch", `${what} block is the head: same id, empty history proof`);
  } else if (block.height > head.height
    || !(await verifyInclusion(block.blockId, block.height, head.height, inc.historyProof, head.historyRoot))) {
    throw fail("history_root_mismatch", `block ${block.height} is not in the head's history root`);
  }
  return tx;
}

/** The answer for a bundle (parsed JSON) against an anchor, as of the verifier's clock
 *  `nowMs`; `maxAgeMs` null turns freshness off. Returns ledger/verify.py's JSON form:
 *  a verdict (VALID, REVOKED, EXPIRED, NOT_FOUND) or {status: INVALID|UNVERIFIABLE, reason, message}. */
export async function verifyBundle(doc, anchor, { nowMs, maxAgeMs = DEFAULT_MAX_AGE_MS }) {
  if (!Number.isSafeInteger(nowMs) || (maxAgeMs !== null && !(Number.isSafeInteger(maxAgeMs) && maxAgeMs >= 0)))
    throw new RangeError("nowMs must be an integer (Unix ms) and maxAgeMs null or an integer >= 0");
  let info = null;
  try {
    const b = parseBundle(doc);
    const { head, starts, sets } = await verifyHead(b, anchor);
    info = { height: head.height, block_time_ms: head.timeMs, head_age_ms: nowMs - head.timeMs, checked_at_ms: nowMs, max_age_ms: maxAgeMs };
    if (maxAgeMs !== null && info.head_age_ms > maxAgeMs)
      return { status: "UNVERIFIABLE", reason: "state_too_old", message: `state too old: the head is ${info.head_age_ms} ms old; at most ${maxAgeMs} ms accepted`, ...info };
    return await judge(b, anchor, head, { starts, sets }, info);
  } catch (e) {
    if (!(e instanceof VerificationError)) throw e;
    return { status: UNVERIFIABLE.includes(e.reason) ? "UNVERIFIABLE" : "INVALID", reason: e.reason, message: e.message, ...(info ?? {}) };
  }
}

/** Steps 3–6 against the verified head; `sets` are the validator sets in force (step 1). */
async function judge(b, anchor, head, sets, info) {
  const c = b.commitment;
  const base = { commitment: hex(c), ...info, issuer: null, doc_type: null, issued_at_ms: null, valid_until_ms: null,
    attested_height: null, attest_tx_id: null, revoked_height: null, revoke_reason: null,
    revoked_by: null, revoke_proposal: null, access: null };
  const proof = parseStateProof(b.stateProof); // parsed after the head, as ledger/verify.py does
  if (!(await verifyStateProof(head.stateRoot, await stateKey("attestation", c), b.record, proof)))
    throw fail("state_root_mismatch", "the state proof does not match the head's state root");
  if (b.record === null) {
    if (b.attest !== null || b.revoke !== null || b.proposal !== null || b.consent !== null) throw fail("malformed", "a bundle without a record carries transactions");
    return { status: "NOT_FOUND", ...base };
  }
  const rec = decodeRecord(b.record);
  if (b.attest === null) throw fail("malformed", "a record without its ATTEST transaction");
  const tx = await included(b.attest, head, rec.height, rec.position, anchor.chainId, "ATTEST");
  const p = tx.payload;
  if (tx.kind !== ATTEST || !eq(p[1], c)) throw fail("wrong_commitment", "the ATTEST transaction is for another commitment");
  if (p[0] !== rec.docType || p[3] !== rec.validUntilMs || !eq(p[5], rec.subject)) throw fail("record_mismatch", "the record does not match its ATTEST transaction");
  if (!eq(tx.sender, rec.issuerKey)) throw fail("signer_mismatch", `the ATTEST is not signed by the key the record names for ${rec.issuer}`);
  if (!rec.revokedHeight) {
    if (b.revoke !== null || b.proposal !== null) throw fail("malformed", "revocation proofs for a record that is not revoked");
  } else await checkRevocation(b, anchor.chainId, head, sets, rec);
  const access = await checkConsent(b, anchor.chainId, head, rec);
  const status = rec.revokedHeight ? "REVOKED"
    : rec.validUntilMs && info.checked_at_ms >= rec.validUntilMs ? "EXPIRED" : "VALID";
  return { ...base, status, issuer: rec.issuer, doc_type: rec.docType, issued_at_ms: p[2],
    valid_until_ms: rec.validUntilMs || null, attested_height: rec.height, attest_tx_id: hex(tx.txId),
    revoked_height: rec.revokedHeight || null, revoke_reason: rec.revokedHeight ? rec.revokeReason : null,
    revoked_by: rec.revoker || null, revoke_proposal: b.proposal === null ? null : hex(b.proposal.id), access };
}

/** Step 6 (docs/CONSENT.md §5): a document bound to a data subject needs the recorded
 *  access under the subject's consent; every failure of steps 2–5 is consent_mismatch.
 *  The access the verdict names, or null for a document bound to no subject. */
async function checkConsent(b, chain, head, rec) {
  if (!rec.subject.length) {
    if (b.consent !== null) throw fail("malformed", "consent proofs for a document bound to no subject");
    return null;
  }
  if (b.consent === null) throw fail("consent_missing", "this document is bound to its data subject: the bundle carries no recorded access");
  try {
    return await consentSteps(b.consent, b.commitment, chain, head, rec);
  } catch (e) {
    if (!(e instanceof VerificationError)) throw e;
    throw fail("consent_mismatch", e.detail);
  }
}

async function consentSteps(cons, c, chain, head, rec) {
  // 2. the grant record, proven at the head's state root
  const proof = parseStateProof(cons.stateProof), grant = decodeGrant(cons.record);
  if (!(await verifyStateProof(head.stateRoot, await stateKey("grant", cons.grantId), cons.record, proof)))
    throw fail("consent_mismatch", "the grant record's proof does not match the head's state root");
  // 3. the subject's own signed CONSENT_GRANT, where the record says
  const gtx = await included(cons.grantTx, head, grant.height, grant.position, chain, "CONSENT_GRANT");
  if (!eq(gtx.txId, cons.grantId) || gtx.kind !== CONSENT_GRANT) throw fail("consent_mismatch", "not this grant's CONSENT_GRANT");
  if (!eq(gtx.sender, grant.subject) || !eq(gtx.sender, rec.subject)) throw fail("consent_mismatch", "the CONSENT_GRANT is not signed by the document's subject key");
  if (!eq(enc(gtx.payload), enc(grant.payload))) throw fail("consent_mismatch", "the grant record does not match its CONSENT_GRANT");
  // 4. the ACCESS, listed in the grant at an index below max_uses, by its signer
  const block = await decodeHeader(cons.access.header, chain, "ACCESS block header");
  const i = grant.accesses.findIndex((a) => a.height === block.height && a.position === cons.access.index);
  if (i < 0 || i >= grant.maxUses) throw fail("consent_mismatch", "the ACCESS is not among the accesses the grant lists");
  const atx = await included(cons.access, head, block.height, cons.access.index, chain, "ACCESS");
  const p = atx.payload;
  if (atx.kind !== ACCESS) throw fail("consent_mismatch", "the transaction at the access's place is not an ACCESS");
  if (!eq(atx.sender, grant.accesses[i].memberKey)) throw fail("consent_mismatch", "the ACCESS is not signed by the key the grant lists");
  if (!eq(p[0], cons.grantId) || !eq(p[1], c) || p[2] !== grant.purpose)
    throw fail("consent_mismatch", "the ACCESS is not to this document under this grant for its purpose");
  if (!grant.commitments.some((x) => eq(x, c))) throw fail("consent_mismatch", "the grant does not cover this document");
  // 5. live at the access: inside the window by its block's time, not revoked before it
  if (block.timeMs < grant.notBeforeMs || block.timeMs > grant.notAfterMs) throw fail("consent_mismatch", "the access is outside the grant's window");
  if (grant.revokedHeight && (block.height > grant.revokedHeight || (block.height === grant.revokedHeight && cons.access.index > grant.revokePosition)))
    throw fail("consent_mismatch", "the access came after the grant's revocation");
  return { grant_id: hex(cons.grantId), purpose: grant.purpose, grantee: grant.grantee, height: block.height,
    time_ms: block.timeMs, member_key: hex(atx.sender) };
}

/** Step 5: the transaction that revoked the record is where the record says, signed by the
 *  revoker's key, and entitled: the issuer's own REVOKE, or the deciding vote of an
 *  approved governance proposal whose yes votes are counted here. */
async function checkRevocation(b, chain, head, sets, rec) {
  if (b.revoke === null) throw fail("malformed", "a revoked record without the transaction that revoked it");
  const rtx = await included(b.revoke, head, rec.revokedHeight, rec.revokePosition, chain, "revoking");
  if (!eq(rtx.sender, rec.revokerKey)) throw fail("signer_mismatch", `the revoking transaction is not signed by the key the record names for ${rec.revoker}`);
  const p = rtx.payload;
  if (rtx.kind === REVOKE) {
    if (!eq(p[0], b.commitment)) throw fail("wrong_commitment", "the REVOKE transaction is for another commitment");
    if (p[1] !== rec.revokeReason) throw fail("record_mismatch", "the record's reason is not the REVOKE's");
    if (rec.revoker !== rec.issuer) throw fail("signer_mismatch", "a REVOKE by a member other than the issuer");
    if (b.proposal !== null) throw fail("malformed", "a proposal for a revocation by the issuer");
    return;
  }
  if (rtx.kind !== GOV_VOTE && rtx.kind !== GOV_PROPOSE) throw fail("record_mismatch", "the transaction at the revocation does not revoke");
  if (b.proposal === null) throw fail("malformed", "a governance revocation without its proposal");
  const prop = b.proposal;
  const proof = parseStateProof(prop.stateProof), pr = decodeProposal(prop.record);
  if (!(await verifyStateProof(head.stateRoot, await stateKey("proposal", prop.id), prop.record, proof)))
    throw fail("state_root_mismatch", "the proposal's proof does not match the head's state root");
  // A GOV_VOTE decides by approving this proposal; a GOV_PROPOSE (its proposer's own yes
  // reached the quorum) is the proposal: its tx id is the proposal id.
  const decides = rtx.kind === GOV_VOTE ? eq(p[0], prop.id) && p[1] === true : eq(rtx.txId, prop.id);
  if (!decides) throw fail("governance_mismatch", "the revoking transaction is not a yes vote on it");
  if (pr.action !== REVOKE_ATTESTATION || !eq(pr.args[0], b.commitment) || pr.args[1] !== rec.revokeReason
    || pr.status !== APPROVED || pr.decidedHeight !== rec.revokedHeight)
    throw fail("governance_mismatch", `the proposal is not the approved revocation of this commitment with this reason at height ${rec.revokedHeight}`);
  const voters = setAt(sets, rec.revokedHeight);
  if (voters === null) throw fail("governance_mismatch", `decided at height ${rec.revokedHeight}, before the trusted validator set`);
  // Only yes votes by members of the set in force at that height count (§11 step 5).
  const yes = pr.yes.filter((id) => voters.members.includes(id));
  if (yes.length < voters.quorum)
    throw fail("governance_mismatch", `${yes.length} yes votes of the ${voters.members.length} validators at height ${rec.revokedHeight}; ${voters.quorum} needed`);
  if (!yes.includes(rec.revoker)) throw fail("signer_mismatch", `${rec.revoker} is not a counted yes voter`);
}

/** The validator set that certified `height` (PROOFS.md §11 step 1); null before the anchor's. */
function setAt({ starts, sets }, height) {
  let found = null;
  for (let i = 0; i < starts.length && starts[i] <= height; i++) found = sets[i];
  return found;
}
