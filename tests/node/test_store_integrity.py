"""A damaged store is never served, and readers of a data directory never write to it.

One real data directory, written by four real nodes (tests/support/real_store.py), is
copied for every case:

- every file of it (``ledger/`` and ``consensus/``: ``CURRENT``, ``MANIFEST-*``, tables,
  logs, ``LOCK``, ``LOG``, ``LOG.old``) in turn has a byte flipped or is truncated to
  half; the node (``node.node.Node``, its real start-up) either refuses to start with one
  line naming the database, or starts on a store that serves exactly what the undamaged
  one serves (at the same or, after LevelDB dropped a torn log tail, a lower height);
  ``dvp store check``'s full check agrees with the start-up check in every case;
- a refused store is rebuilt from three running peers by ``dvp store resync``'s logic,
  after which the node starts and serves what its peers serve;
- ``dvp audit replay --datadir`` and ``dvp store check`` leave every file of the data
  directory byte for byte and mtime for mtime as they found it, on a read-only bind
  mount where the machine allows one (writes fail there even for root).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trio

from ledger.errors import StoreDamage
from ledger.genesis import read_genesis
from node.config import load_config
from node.node import Node
from node.resync import ResyncError, resync
from node.stores import check_datadir
from node.transport import MemoryHub
from tests.support.cluster import transport_factory
from tests.support.real_store import VICTIM, RealStore, build_real_store, node_config

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> RealStore:
    return build_real_store(tmp_path_factory.mktemp("realstore") / "net")


@dataclass
class Answers:
    """What a node serves from its stores, as bytes (comparable across stores)."""

    height: int
    blocks: list[tuple[bytes | None, bytes | None]]  # block bytes, certificate bytes
    tx_locations: dict[bytes, tuple[int, int] | None]
    attested_at: dict[bytes, int | None]  # the attested-commitment index
    bundles: dict[bytes, str]  # commitment -> proof bundle JSON at ``height``
    record: bytes | None  # the signing record


def _answers(node: Node, commitments: list[bytes], ref: Answers | None = None) -> Answers:
    store, h = node.ledger.store, node.ledger.height
    blocks = [(store.get_block_bytes(i), store.get_certificate_bytes(i)) for i in range(h + 1)]
    tx_ids = (
        list(ref.tx_locations)
        if ref is not None
        else [tx.tx_id for i in range(h + 1) for tx in store.get_block(i).txs]  # type: ignore[union-attr]
    )
    record = node.cdb.load_record() if node.cdb is not None else None
    return Answers(
        h,
        blocks,
        {t: store.tx_location(t) for t in tx_ids},
        {c: store.attested_height(c) for c in commitments},
        {c: json.dumps(node.prover.bundle(c).to_json(), sort_keys=True) for c in commitments},
        None if record is None else record.encode(),
    )


def _reference_at(ref: Answers, height: int) -> Answers:
    """What the undamaged store serves at ``height`` (bundles only at its own height)."""

    def upto(h: int | None) -> int | None:
        return h if h is not None and h <= height else None

    return Answers(
        height,
        ref.blocks[: height + 1],
        {
            t: (loc if loc is not None and loc[0] <= height else None)
            for t, loc in ref.tx_locations.items()
        },
        {c: upto(h) for c, h in ref.attested_at.items()},
        ref.bundles if height == ref.height else {},
        ref.record,
    )


@pytest.fixture(scope="module")
def reference(store: RealStore, tmp_path_factory: pytest.TempPathFactory) -> Answers:
    copy = tmp_path_factory.mktemp("reference") / "data"
    shutil.copytree(store.datadir, copy)
    node = Node(load_config(node_config(store, copy)), transport_factory(MemoryHub()))
    try:
        return _answers(node, store.commitments)
    finally:
        node.close()


def _files(datadir: Path) -> list[Path]:
    return sorted(p.relative_to(datadir) for p in datadir.rglob("*") if p.is_file())


def _damage(path: Path, how: str) -> None:
    data = path.read_bytes()
    if how == "flip":
        if not data:  # LOCK is empty: the only way to change it is to give it a byte
            path.write_bytes(b"\x5a")
            return
        i = len(data) // 2
        path.write_bytes(data[:i] + bytes([data[i] ^ 0x5A]) + data[i + 1 :])
    else:
        path.write_bytes(data[: len(data) // 2])


def _kind(rel: Path) -> str:
    name = rel.name
    if name.endswith((".ldb", ".sst")):
        return "table"
    if name.endswith(".log"):
        return "log"
    if name.startswith("MANIFEST-"):
        return "manifest"
    return name  # CURRENT, LOCK, LOG, LOG.old


# What each damage to each kind of file must lead to. "refused": the node does not
# start; "intact": it starts and serves exactly the undamaged store (the file holds no
# data: the lock, LevelDB's info logs); "refused or rolled back": a log cut short is what
# a crash mid-write leaves, and LevelDB recovers it up to the cut, so the node may start
# at an earlier, whole state and catch up from its peers (never a hole, never a wrong
# answer).
EXPECTED = {
    ("table", "flip"): {"refused"},
    ("table", "truncate"): {"refused"},
    ("log", "flip"): {"refused"},
    ("log", "truncate"): {"refused", "rolled back"},
    ("manifest", "flip"): {"refused"},
    ("manifest", "truncate"): {"refused"},
    ("CURRENT", "flip"): {"refused"},
    ("CURRENT", "truncate"): {"refused"},
    ("LOCK", "flip"): {"intact"},
    ("LOCK", "truncate"): {"intact"},
    ("LOG", "flip"): {"intact"},
    ("LOG", "truncate"): {"intact"},
    ("LOG.old", "flip"): {"intact"},
    ("LOG.old", "truncate"): {"intact"},
}


def _outcome(store: RealStore, reference: Answers, case: Path, rel: Path) -> tuple[str, str]:
    """Start the node on the damaged copy ``case``: what happened, and a detail (asserts
    the rest)."""
    genesis = read_genesis(store.root / "genesis.json")
    full = check_datadir(case, genesis)  # on a snapshot: the copy is not touched
    config = load_config(node_config(store, case))
    try:
        node = Node(config, transport_factory(MemoryHub()))
    except StoreDamage as exc:
        line = str(exc)
        assert "\n" not in line, line
        assert str(case / rel.parts[0]) in line, f"the message names no database: {line}"
        assert "dvp store resync --config" in line, line
        assert full.damage is not None, f"start-up refused ({line}) but store check passed"
        return "refused", f": {line.split(': ', 1)[1][:90]}"
    try:
        assert node.store_ok
        assert full.ok, f"the node started, but store check says: {full.damage}"
        got = _answers(node, store.commitments, reference)
    finally:
        node.close()
    want = _reference_at(reference, got.height)
    assert got.height <= reference.height
    assert got.blocks == want.blocks, "a block or certificate differs from the undamaged store's"
    assert got.tx_locations == want.tx_locations, "the tx index differs"
    assert got.attested_at == want.attested_at, "the attested-commitment index differs"
    if got.height == reference.height:
        assert got.bundles == reference.bundles, "a proof bundle differs"
    if got.record != reference.record:
        # the consensus log cut short: an older signing record (what a crash leaves)
        return "rolled back", ": an older signing record"
    if got.height < reference.height:
        return "rolled back", f" to height {got.height} of {reference.height}"
    return "intact", ""


def test_every_file_of_a_real_store_flipped_or_truncated(
    store: RealStore, reference: Answers, tmp_path: Path
) -> None:
    files = _files(store.datadir)
    kinds = {_kind(rel) for rel in files}
    assert {"table", "log", "manifest", "CURRENT", "LOCK", "LOG"} <= kinds, files
    assert {rel.parts[0] for rel in files} == {"ledger", "consensus"}, files
    table: list[str] = []
    wrong: list[str] = []
    for n, rel in enumerate(files):
        for how in ("flip", "truncate"):
            case = tmp_path / f"case{n}-{how}"
            shutil.copytree(store.datadir, case)
            _damage(case / rel, how)
            outcome, detail = _outcome(store, reference, case, rel)
            table.append(f"{str(rel):28} {how:8} -> {outcome}{detail}")
            if outcome not in EXPECTED[(_kind(rel), how)]:
                wrong.append(table[-1])
            shutil.rmtree(case)
    print("\n" + "\n".join(table))
    assert not wrong, "unexpected outcomes:\n" + "\n".join(wrong)


# --------------------------------------------------------------------------- resync


def test_resync_rebuilds_a_refused_store_from_its_peers(
    store: RealStore, reference: Answers, tmp_path: Path
) -> None:
    # A copy of the whole devnet: the peers write to their own data directories.
    root = tmp_path / "net"
    shutil.copytree(store.root, root)
    configs = {name: root / "nodes" / f"{name}.toml" for name in store.entries}
    victim = load_config(configs[VICTIM])
    _damage(sorted((victim.data_dir / "ledger").glob("*.ldb"))[0], "flip")
    with pytest.raises(StoreDamage, match="checksum mismatch"):
        Node(victim, transport_factory(MemoryHub()))

    async def main() -> tuple[Any, list[bytes]]:
        hub = MemoryHub()
        peers = [
            Node(load_config(cfg), transport_factory(hub))
            for name, cfg in configs.items()
            if name != VICTIM
        ]
        async with trio.open_nursery() as nursery:
            for p in peers:
                await nursery.start(p.run)
            result = await resync(victim, transport_factory(hub), timeout_s=60)
            ids = [peers[0].ledger.store.get_block_id(h) or b"" for h in range(result.height + 1)]
            nursery.cancel_scope.cancel()
        return result, ids

    result, ids = trio.run(main)
    assert result.rebuilt and result.peers >= 2, result
    assert "checksum mismatch" in result.why
    assert result.moved_to is not None and (result.moved_to / "CURRENT").is_file()
    node = Node(victim, transport_factory(MemoryHub()))  # it starts: the store is whole
    try:
        assert node.store_ok and node.ledger.height == result.height >= reference.height
        assert [node.ledger.store.get_block_id(h) for h in range(result.height + 1)] == ids
        got = _answers(node, store.commitments, reference)
    finally:
        node.close()
    # the same blocks (each node keeps the certificate it collected or was sent: any
    # quorum of signatures certifies a block)
    assert [b for b, _c in got.blocks[: reference.height + 1]] == [b for b, _c in reference.blocks]
    assert got.tx_locations == reference.tx_locations
    assert got.attested_at == reference.attested_at
    assert check_datadir(victim.data_dir, read_genesis(root / "genesis.json")).ok


def test_resync_keeps_an_intact_store_and_refuses_a_damaged_signing_record(
    store: RealStore, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    shutil.copytree(store.datadir, data)
    config = load_config(node_config(store, data))

    async def run(**kw: Any) -> Any:
        return await resync(config, transport_factory(MemoryHub()), timeout_s=1, **kw)

    result = trio.run(run)
    assert not result.rebuilt and result.why == "intact"
    assert sorted(p.name for p in data.iterdir()) == ["consensus", "ledger"]
    # (that look opened the stores: LevelDB moved its log into a table file)
    _damage(max((data / "consensus").glob("*.ldb"), key=lambda p: p.stat().st_size), "flip")
    with pytest.raises(ResyncError, match="signing record, which no peer has"):
        trio.run(run)
    assert sorted(p.name for p in data.iterdir()) == ["consensus", "ledger"]  # nothing moved
    # With the flag the record is moved aside; with no peer to ask, resync then times
    # out (exit 3 from the CLI), keeping what it has.
    with pytest.raises(ResyncError) as err:
        trio.run(lambda: run(new_signing_record=True))
    assert err.value.unreachable
    assert any(p.name.startswith("consensus.damaged-") for p in data.iterdir())


# --------------------------------------------------------------------------- read-only


def _fingerprint(root: Path) -> dict[str, tuple[str, int, int]]:
    """Every file and directory under ``root``: (sha256, size, mtime_ns)."""
    out: dict[str, tuple[str, int, int]] = {}
    for p in sorted(root.rglob("*")):
        st = p.lstat()
        digest = hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
        out[str(p.relative_to(root))] = (digest, st.st_size, st.st_mtime_ns)
    return out


@pytest.fixture
def readonly_datadir(store: RealStore, tmp_path: Path) -> Iterator[tuple[Path, bool]]:
    """A copy of the data directory (genesis beside it), ``chmod -R a-w``, seen through a
    read-only bind mount if the machine permits one: (the directory, mounted)."""
    src = tmp_path / "net"
    (src / "data").mkdir(parents=True)
    shutil.copytree(store.datadir, src / "data" / VICTIM)
    shutil.copy(store.root / "genesis.json", src / "genesis.json")
    subprocess.run(["chmod", "-R", "a-w", str(src)], check=True)
    mnt = tmp_path / "ro"
    mnt.mkdir()
    mounted = (
        subprocess.run(["mount", "--bind", str(src), str(mnt)], capture_output=True).returncode == 0
    )
    if (
        mounted
        and subprocess.run(
            ["mount", "-o", "remount,ro,bind", str(mnt)], capture_output=True
        ).returncode
    ):
        subprocess.run(["umount", str(mnt)], capture_output=True)
        mounted = False
    top = mnt if mounted else src
    try:
        if mounted:
            with pytest.raises(OSError):
                (top / "probe").write_bytes(b"")  # really read-only, even for root
        yield top / "data" / VICTIM, mounted
    finally:
        if mounted:
            subprocess.run(["umount", str(mnt)], capture_output=True, check=True)
        subprocess.run(["chmod", "-R", "u+w", str(src)], check=True)


def _dvp(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run(
        [sys.executable, "-m", "cli.main", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
        env=env,
    )


def test_auditor_and_store_check_never_write_to_the_data_directory(
    readonly_datadir: tuple[Path, bool], reference: Answers, tmp_path: Path
) -> None:
    datadir, mounted = readonly_datadir
    top = datadir.parent.parent
    before = _fingerprint(top)
    assert any(k.endswith(".log") and v[1] > 0 for k, v in before.items()), before
    work = tmp_path / "work"
    work.mkdir()
    audit = _dvp(
        "audit", "replay", "--datadir", str(datadir), "--workdir", str(work), "--json", cwd=work
    )
    assert audit.returncode == 0, audit.stderr
    doc = json.loads(audit.stdout)
    assert doc["ok"] and doc["height"] == reference.height, doc
    assert any("snapshot" in n for n in doc["notes"]), doc["notes"]
    check = _dvp(
        "store", "check", "--datadir", str(datadir), "--workdir", str(work), "--json", cwd=work
    )
    assert check.returncode == 0, check.stderr
    assert json.loads(check.stdout)["ok"]
    assert _fingerprint(top) == before, "a file in the data directory changed"
    assert not list(work.iterdir()), "the scratch snapshot was left behind"
    print(
        f"\nread-only bind mount: {'yes' if mounted else 'not permitted here'}; "
        f"{len(before)} files and directories unchanged"
    )


def test_damage_found_while_serving_a_peer_makes_the_node_unready(
    store: RealStore, tmp_path: Path
) -> None:
    from ledger.codec import decode
    from ledger.store_format import P_BLOCK, h8
    from node import sync

    data = tmp_path / "data"
    shutil.copytree(store.datadir, data)
    node = Node(load_config(node_config(store, data)), transport_factory(MemoryHub()))
    try:
        assert node.store_ok and node.store_problem is None
        # rot after the start-up check: a stored block's bytes change under the node
        db = node.ledger.store._db
        key = P_BLOCK + h8(2)
        value = db.get(key)
        db.put(key, value[:-1] + bytes([value[-1] ^ 1]))
        answer = trio.run(node.handle_request, b"peer", sync.blocks_request(1, 4))
        assert decode(answer)[0] == "error"
        assert not node.store_ok
        assert node.store_problem is not None and "height 2" in node.store_problem
    finally:
        node.close()
