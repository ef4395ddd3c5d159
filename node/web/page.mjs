// The verification page's DOM layer (verify.html): reads the inputs, runs the checks in
// this browser with verify.mjs, shows the answer. Logic lives in pagelib.mjs (tested);
// this file only wires elements to it. The file's bytes never leave the page: only the
// commitment computed from them is sent, to this node's JSON-RPC (POST /).
import { anchorFromGenesisJson, commitmentOf, CodeError, hex, verifyBundle, DEFAULT_MAX_AGE_MS } from "./verify.mjs";
import * as lib from "./pagelib.mjs";

const $ = (id) => document.getElementById(id);
let genesis = null; // { doc, anchor } once the node's genesis is loaded and hashed
let chosen = null; // the File to verify
let receiptUrl = null;
const PIN_KEY = "dvp.verify.pinnedGenesis";

async function loadGenesis() {
  try {
    const response = await fetch("verify/genesis.json", { cache: "no-cache", credentials: "omit" });
    if (!response.ok) throw new Error(`the node did not serve its genesis (HTTP ${response.status})`);
    const doc = await response.json();
    genesis = { doc, anchor: await anchorFromGenesisJson(doc) };
    $("genesis-hash").textContent = genesis.anchor.genesisHash;
    $("genesis-chain").textContent = `Chain: ${genesis.anchor.chainId}`;
    try { pinned(); } catch { /* a stored pin that differs: shown next to the field */ }
  } catch (e) {
    $("genesis-hash").textContent = `unavailable: ${e.message}`;
  }
}

function pinned() {
  const status = $("pin-status");
  status.className = "status";
  try {
    const pin = lib.normalisePinnedHash($("pin").value);
    if (pin && genesis) {
      lib.checkPinned(genesis.anchor.genesisHash, pin);
      status.textContent = "Pinned: it matches this node's genesis.";
    } else status.textContent = "";
    return pin;
  } catch (e) {
    status.textContent = e.message;
    status.className = "status error";
    throw e;
  }
}

function choose(file) {
  chosen = file ?? null;
  $("file-name").textContent = chosen ? `${chosen.name} (${chosen.size} bytes)` : "";
}

function show(verdict, receipt, note = "") {
  const v = $("verdict");
  v.textContent = verdict.status;
  v.className = `verdict ${verdict.status}`;
  $("verdict-text").textContent = `${note}${lib.verdictText(verdict)}`;
  const rows = $("rows");
  rows.replaceChildren();
  for (const [k, val] of lib.resultRows(verdict)) {
    const dt = document.createElement("dt"), dd = document.createElement("dd");
    dt.textContent = k;
    dd.textContent = val;
    rows.append(dt, dd);
  }
  const checks = $("checks");
  checks.replaceChildren(...lib.checksPassed(verdict).map((c) => {
    const li = document.createElement("li");
    li.textContent = c;
    return li;
  }));
  const button = $("receipt");
  if (receiptUrl) URL.revokeObjectURL(receiptUrl);
  receiptUrl = null;
  button.hidden = !receipt;
  if (receipt) {
    receiptUrl = URL.createObjectURL(new Blob([lib.encodeReceipt(receipt)], { type: "application/json" }));
    button.dataset.name = lib.receiptName(verdict, receipt.commitment);
  }
}

function problem(message) {
  const v = $("verdict");
  v.textContent = "Not checked";
  v.className = "verdict";
  $("verdict-text").textContent = message;
  $("verdict-text").className = "error";
  $("rows").replaceChildren();
  $("checks").replaceChildren();
  $("receipt").hidden = true;
}

async function verify(event) {
  event.preventDefault();
  $("verdict-text").className = "";
  const button = $("verify"), result = $("result");
  button.disabled = true;
  result.setAttribute("aria-busy", "true");
  delete result.dataset.verifyMs;
  $("verdict").textContent = "Checking…";
  try {
    if (!genesis) throw new Error("the node's genesis is not loaded: reload the page");
    pinned(); // throws (and says so) when a pinned hash is not this node's genesis
    if (!chosen) throw new Error("choose the file to verify");
    const commitment = hex(await commitmentOf(new Uint8Array(await chosen.arrayBuffer()), $("code").value));
    const saved = $("saved").files[0];
    if (saved) return await recheck(saved, commitment);
    const { headers, body } = lib.proofRequest(commitment, $("apikey").value, $("access").value);
    const response = await fetch("/", { method: "POST", headers, body, cache: "no-store", credentials: "omit" });
    const bundle = lib.bundleFromResponse(await response.json());
    const checkedAtMs = Date.now();
    const started = performance.now();
    const verdict = await verifyBundle(bundle, genesis.anchor, { nowMs: checkedAtMs, maxAgeMs: DEFAULT_MAX_AGE_MS });
    // How long this browser took to check the bundle (read by the Chromium tests: page_verify_ms).
    result.dataset.verifyMs = (performance.now() - started).toFixed(2);
    const receipt = lib.receiptOffered(verdict) ? lib.buildReceipt({ bundle, verdict,
      genesisHash: genesis.anchor.genesisHash, commitmentHex: commitment, checkedAtMs, maxAgeMs: DEFAULT_MAX_AGE_MS }) : null;
    show(verdict, receipt);
  } catch (e) {
    problem(e instanceof CodeError ? `Verification code: ${e.message}` : e.message);
  } finally {
    button.disabled = false;
    result.setAttribute("aria-busy", "false");
    // On a phone the answer is below the form: bring it into view.
    result.scrollIntoView({ block: "start" });
  }
}

// A saved receipt, re-checked in the page with no call to the node (PROOFS.md §12).
async function recheck(file, commitment) {
  let doc;
  try { doc = JSON.parse(await file.text()); } catch { throw new Error("the receipt is not JSON"); }
  const { verdict, holds, differing } = await lib.reverifyReceipt(doc, genesis.anchor, commitment);
  if (!holds) throw new Error(`the receipt's recorded answer does not hold: re-checked it is ${verdict.status} (differing: ${differing.join(", ")})`);
  show(verdict, null, `Receipt re-checked with no node: its answer holds as of ${lib.isoTime(doc.checked_at_ms)}. `);
}

function download() {
  if (!receiptUrl) return;
  const a = document.createElement("a");
  a.href = receiptUrl;
  a.download = $("receipt").dataset.name;
  a.click();
}

function wire() {
  const drop = $("drop");
  // A file dropped beside the zone must not make the browser open it in place of the page.
  for (const kind of ["dragover", "drop"]) document.addEventListener(kind, (e) => e.preventDefault());
  $("file").addEventListener("change", (e) => choose(e.target.files[0]));
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    choose(e.dataTransfer.files[0]);
  });
  // The pinned hash is kept in this browser, so an officer pins the consortium's once.
  const store = (() => { try { return window.localStorage; } catch { return null; } })(); // off in some private modes
  const stored = store?.getItem(PIN_KEY);
  if (stored) $("pin").value = stored;
  $("pin").addEventListener("change", () => {
    try {
      const pin = pinned();
      if (pin) store?.setItem(PIN_KEY, pin); else store?.removeItem(PIN_KEY);
    } catch { /* shown next to the field */ }
  });
  $("verify-form").addEventListener("submit", verify);
  $("receipt").addEventListener("click", download);
}

wire();
loadGenesis();
