// The verification page's logic, without the DOM (page.mjs is the thin DOM layer).
//
// Owns: the pinned genesis hash (what an officer types or pastes), the JSON-RPC request
// for a bundle and the reading of its answer, the receipt (docs/PROOFS.md §12, built as
// ledger/receipt.py builds and encodes it), and the words and rows the page shows for an
// answer, including the list of checks it passed (docs/CONFORMANCE.md's order), and the
// re-check of a saved receipt with no node (§12, as ledger.receipt.reverify).
// Tested under node --test (pagelib.test.mjs); receipts are also decoded and re-verified
// by ledger.receipt in tests/node/test_verify_page.py.

import { verifyBundle } from "./verify.mjs";

export const RECEIPT_FORMAT = "dvp-receipt";
export const RECEIPT_VERSION = 1;
const HEX32 = /^[0-9a-f]{64}$/;

/** A genesis hash as typed: spaces and case ignored; null when empty; throws when not
 *  64 hex characters. */
export function normalisePinnedHash(text) {
  const s = (text ?? "").replace(/\s+/g, "").toLowerCase();
  if (!s) return null;
  if (!HEX32.test(s)) throw new Error("a genesis hash is 64 hexadecimal characters (0-9, a-f)");
  return s;
}

/** Refuse a fetched genesis whose hash is not the pinned one (when one is pinned). */
export function checkPinned(genesisHash, pinned) {
  if (pinned && pinned !== genesisHash)
    throw new Error(`the node's genesis hash is ${genesisHash}, not the pinned ${pinned}: another chain, or a node not to trust`);
}

/** The JSON-RPC call and its headers (the API key as node/rpc/auth.py reads it); `access`,
 *  when given, is the id of the ACCESS the caller recorded for a document bound to its
 *  data subject (docs/CONSENT.md §4). */
export function proofRequest(commitmentHex, apiKey, access = "") {
  const headers = { "Content-Type": "application/json" };
  const key = (apiKey ?? "").trim();
  if (key) headers.Authorization = `Bearer ${key}`;
  const params = { commitment: commitmentHex };
  const accessId = (access ?? "").trim().toLowerCase();
  if (accessId) params.access = accessId;
  const body = JSON.stringify({ jsonrpc: "2.0", id: 1, method: "getAttestationProof", params });
  return { headers, body };
}

/** The bundle from a JSON-RPC answer; throws with the node's one-line error. */
export function bundleFromResponse(doc) {
  if (doc && typeof doc === "object" && typeof doc.error === "string") // an HTTP refusal (413, 415, ...)
    throw new Error(`the node refused: ${doc.error}`);
  if (doc && typeof doc === "object" && doc.error)
    throw new Error(`the node refused: ${doc.error.message ?? "error"} (code ${doc.error.code})`);
  if (!doc || typeof doc.result !== "object" || doc.result === null || Array.isArray(doc.result))
    throw new Error("the node's answer holds no proof bundle");
  return doc.result;
}

/** The receipt document, fields as ledger/receipt.py's Receipt. */
export function buildReceipt({ bundle, verdict, genesisHash, commitmentHex, checkedAtMs, maxAgeMs }) {
  return { format: RECEIPT_FORMAT, version: RECEIPT_VERSION, genesis_hash: genesisHash, commitment: commitmentHex,
    checked_at_ms: checkedAtMs, max_age_ms: maxAgeMs, verdict, bundle };
}

/** Equal JSON values (the verdict's `access` is an object: compared field by field). */
const sameJson = (a, b) => JSON.stringify(sortKeys(a)) === JSON.stringify(sortKeys(b));

function sortKeys(x) {
  if (Array.isArray(x)) return x.map(sortKeys);
  if (x && typeof x === "object") {
    const out = {};
    for (const k of Object.keys(x).sort()) out[k] = sortKeys(x[k]);
    return out;
  }
  return x;
}

/** The receipt's bytes as ledger.receipt.encode writes them: keys sorted, indent 2,
 *  non-ASCII escaped (Python's json.dumps defaults), one trailing newline. */
export function encodeReceipt(receipt) {
  const text = JSON.stringify(sortKeys(receipt), null, 2)
    .replace(/[\u0080-\uffff]/g, (ch) => `\\u${ch.charCodeAt(0).toString(16).padStart(4, "0")}`);
  return `${text}\n`;
}

/** A receipt file name: the verdict and the commitment's first 16 hex characters. */
export const receiptName = (verdict, commitmentHex) =>
  `dvp-receipt-${String(verdict.status).toLowerCase()}-${commitmentHex.slice(0, 16)}.json`;

// Each check a verifier makes (docs/PROOFS.md §11), in order, with the reasons that mean
// it failed: a failure at one check means the ones before it passed.
const CHECKS = [
  ["The bundle is well formed (canonical encoding, known fields)", ["malformed"]],
  ["The head is for this chain (the pinned genesis's chain id)", ["wrong_chain"]],
  ["Validator-set changes since genesis are each certified", ["validator_chain_broken"]],
  ["The head's commit certificate: Ed25519 signatures of a quorum of validators", ["bad_signature", "insufficient_quorum"]],
  ["The head is fresh enough by this computer's clock", ["state_too_old"]],
  ["The record is proven against the head's state root (sparse Merkle proof)", ["state_root_mismatch"]],
  ["The transactions are in their blocks (Merkle proofs) and the blocks in the head's history", ["tx_root_mismatch", "history_root_mismatch"]],
  ["The record matches its ATTEST transaction, for this commitment", ["record_mismatch", "wrong_commitment"]],
  ["The ATTEST and any revocation are signed by the keys the record names", ["signer_mismatch"]],
  ["Any revocation is the issuer's own, or an approved proposal with a quorum of validators' yes votes (counted here)", ["governance_mismatch"]],
  ["For a document bound to its data subject: the access is recorded under a live grant the subject signed", ["consent_missing", "consent_mismatch"]],
];

/** The checks passed for an answer: all of them for a verdict; those before the failed
 *  one for INVALID/UNVERIFIABLE (none when the failure is not placed). */
export function checksPassed(verdict) {
  const names = CHECKS.map(([name]) => name);
  if (!("reason" in verdict)) {
    if (verdict.max_age_ms === null) return names.filter((n) => !n.startsWith("The head is fresh"));
    return names;
  }
  const i = CHECKS.findIndex(([, reasons]) => reasons.includes(verdict.reason));
  return i < 0 ? [] : names.slice(0, i);
}

const VERDICT_TEXT = {
  VALID: "The document is attested and in force.",
  REVOKED: "The document was attested, then revoked.",
  EXPIRED: "The document was attested; its validity has ended.",
  NOT_FOUND: "No attestation for this file and code: the file differs, the code is wrong, or it was never attested.",
  INVALID: "The node's proof does not verify: do not trust this answer or this node.",
  UNVERIFIABLE: "The proof is sound but the node's state is too old to judge by: try again, or another node.",
};
const CONSENT_TEXT = {
  consent_missing: "The document is bound to its data subject: the node's answer proves no access recorded under the subject's consent. Record an access under a grant, then verify with its id.",
  consent_mismatch: "The document is bound to its data subject: the access the node's answer carries is not proven under a live grant the subject signed.",
};
export const verdictText = (verdict) => CONSENT_TEXT[verdict.reason] ?? VERDICT_TEXT[verdict.status] ?? verdict.status;

/** The recorded access a verdict names (docs/CONSENT.md §5), in words, as `dvp verify` prints it. */
export function accessText(access) {
  if (!access) return null;
  return `at block ${access.height} (${isoTime(access.time_ms)}) under grant ${access.grant_id.slice(0, 16)}… for ${access.purpose}, by ${access.grantee}`;
}

/** A Unix-ms time as ISO 8601 UTC, or null. */
export const isoTime = (ms) => (Number.isSafeInteger(ms) ? new Date(ms).toISOString().replace(".000Z", "Z") : null);

function age(ms) {
  if (!Number.isSafeInteger(ms)) return null;
  return ms < 120_000 ? `${(ms / 1000).toFixed(1)} s` : `${Math.round(ms / 60_000)} min`;
}

// A REVOKE's reason code in words, as `dvp verify` prints it (ledger/transaction.py's RevokeReason).
const REVOKE_REASONS = ["unspecified", "superseded", "issued in error", "fraud suspected", "owner request",
  "data changed", "governance"];
export const revokeReasonText = (code) =>
  Number.isSafeInteger(code) ? (REVOKE_REASONS[code] ?? `reason code ${code}`) : null;

/** Who revoked: the issuer itself, or a consortium vote (its proposal, and the member
 * whose yes vote decided it); null when not revoked. */
export function revokedByText(verdict) {
  if (!verdict.revoked_by) return null;
  if (verdict.revoke_proposal)
    return `a consortium vote (proposal ${verdict.revoke_proposal.slice(0, 16)}…, decided by ${verdict.revoked_by}'s vote)`;
  return `its issuer, ${verdict.revoked_by}`;
}

/** The [label, value] rows shown for an answer; rows that do not apply are left out. */
export function resultRows(verdict) {
  const rows = [
    ["Issuer", verdict.issuer],
    ["Document type", verdict.doc_type],
    ["Attested at", isoTime(verdict.issued_at_ms)],
    ["Attested in block", verdict.attested_height],
    ["Valid until", isoTime(verdict.valid_until_ms)],
    ["Revoked in block", verdict.revoked_height],
    ["Revocation reason", revokeReasonText(verdict.revoke_reason)],
    ["Revoked by", revokedByText(verdict)],
    ["Access recorded", accessText(verdict.access)],
    ["Head height", verdict.height],
    ["Head time", isoTime(verdict.block_time_ms)],
    ["Head age", age(verdict.head_age_ms)],
    ["Checked at", isoTime(verdict.checked_at_ms)],
    ["Reason", verdict.reason],
    ["Detail", verdict.message],
  ];
  return rows.filter(([, v]) => v !== null && v !== undefined).map(([k, v]) => [k, String(v)]);
}

/** Whether the page offers a receipt: for a verdict. An INVALID or UNVERIFIABLE answer's
 *  `message` is worded by this verifier, not ledger/verify.py, so ledger.receipt's
 *  re-verification (same answer, message included) would not hold for it. */
export const receiptOffered = (verdict) => ["VALID", "REVOKED", "EXPIRED", "NOT_FOUND"].includes(verdict.status);

const RECEIPT_FIELDS = ["bundle", "checked_at_ms", "commitment", "format", "genesis_hash", "max_age_ms", "verdict", "version"];
const isInt = (x) => Number.isSafeInteger(x) && x >= 0;

/** Re-check a receipt (parsed JSON) with no node, as docs/PROOFS.md §12 says: the same
 *  genesis, the same file and code (commitmentHex), and the bundle verified as of the
 *  receipt's time giving its recorded answer. Returns {verdict, holds, differing}; throws
 *  for a document that is not a receipt v1, or one for another genesis or document.
 *  An INVALID/UNVERIFIABLE answer's `message` is not compared (each verifier words its own). */
export async function reverifyReceipt(doc, anchor, commitmentHex) {
  if (!doc || typeof doc !== "object" || Array.isArray(doc) || doc.format !== RECEIPT_FORMAT)
    throw new Error(`not a ${RECEIPT_FORMAT} file`);
  if (doc.version !== RECEIPT_VERSION) throw new Error(`${RECEIPT_FORMAT} version ${doc.version}: only ${RECEIPT_VERSION} is known`);
  const keys = Object.keys(doc).sort();
  if (keys.join() !== RECEIPT_FIELDS.join()) throw new Error(`a ${RECEIPT_FORMAT} v1 has exactly the fields ${RECEIPT_FIELDS.join(", ")}`);
  if (!HEX32.test(doc.genesis_hash) || !HEX32.test(doc.commitment) || !isInt(doc.checked_at_ms)
    || !(doc.max_age_ms === null || isInt(doc.max_age_ms)) || !doc.verdict || typeof doc.verdict !== "object"
    || !doc.bundle || typeof doc.bundle !== "object")
    throw new Error(`not a ${RECEIPT_FORMAT} v1: a field has the wrong type`);
  if (doc.genesis_hash !== anchor.genesisHash)
    throw new Error(`it was made against genesis ${doc.genesis_hash.slice(0, 16)}..., not this one (${anchor.genesisHash.slice(0, 16)}...)`);
  if (doc.commitment !== commitmentHex || doc.bundle.commitment !== commitmentHex)
    throw new Error("it is for another document: this file and code give another commitment");
  const verdict = await verifyBundle(doc.bundle, anchor, { nowMs: doc.checked_at_ms, maxAgeMs: doc.max_age_ms });
  const ignore = "reason" in verdict ? new Set(["message"]) : new Set();
  const names = [...new Set([...Object.keys(verdict), ...Object.keys(doc.verdict)])].filter((k) => !ignore.has(k)).sort();
  const differing = names.filter((k) => !sameJson(verdict[k], doc.verdict[k]));
  return { verdict, holds: differing.length === 0, differing };
}
