"""The ledger as consensus sees it: ``consensus.api.App`` and ``Crypto`` for a real node.

``LedgerApp`` answers the replica's questions from ``ledger.chain.Ledger``:
validator sets and epochs by height, proposal validation by (speculative) block
execution, and transaction ids of payloads. Payloads are canonical ``Block``
encodings. Decoded blocks are cached by block id, so the replica's repeated
questions about one payload cost one decode.

The node's ``Crypto`` is ``consensus.signer.Ed25519Crypto``.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence

import msgpack

from consensus.api import BlockInfo
from ledger.chain import Ledger
from ledger.errors import DecodeError, LedgerError
from ledger.types import Block, BlockHeader, Transaction, ValidatorSet


class LedgerApp:
    """``consensus.api.App`` over a ``Ledger`` (see the module docstring)."""

    def __init__(
        self,
        ledger: Ledger,
        verified: Callable[[bytes], bool] | None = None,
        cache_blocks: int = 64,
        known_tx: Callable[[bytes], Transaction | None] | None = None,
        on_valid: Callable[[Sequence[bytes]], None] | None = None,
    ) -> None:
        self.ledger = ledger
        self.verified = verified
        # Told the ids of every proposal that validated: their signatures are now known
        # good, so the same transactions arriving later by gossip are not checked again
        # (a primary's block often reaches a backup before the gossip of its own client
        # transactions: 11 % of a backup's signature checks were made in validation).
        self.on_valid = on_valid
        # The mempool: a proposal's transactions mostly arrived by gossip already.
        self.known_tx = known_tx
        self._blocks: OrderedDict[bytes, Block] = OrderedDict()
        self._cap = cache_blocks
        self.invalid: dict[str, int] = {}

    # -- payload parsing ---------------------------------------------------------------

    def remember(self, block: Block) -> None:
        self._blocks[block.block_id] = block
        self._blocks.move_to_end(block.block_id)
        while len(self._blocks) > self._cap:
            self._blocks.popitem(last=False)

    def block_of(self, payload: bytes) -> Block | None:
        info = self.block_info(payload)
        if info is None:
            return None
        cached = self._blocks.get(info.block_id)
        if cached is not None:
            return cached
        try:
            block = Block.decode(payload, self.known_tx)
        except DecodeError:
            return None
        self.remember(block)
        return block

    def block_info(self, payload: bytes) -> BlockInfo | None:
        # Parse only the header: the payload is 0x92 || header || txs.
        try:
            unpacker = msgpack.Unpacker(raw=False, max_buffer_size=len(payload) + 1)
            unpacker.feed(payload)
            if unpacker.read_array_header() != 2:
                return None
            header = BlockHeader.from_wire(unpacker.unpack())
        except (DecodeError, ValueError, TypeError, msgpack.UnpackException, StopIteration):
            return None
        except Exception:  # noqa: BLE001 - msgpack raises assorted types on garbage
            return None
        return BlockInfo(header.block_id, header.prev_block_id, header.height)

    # -- consensus.api.App -------------------------------------------------------------

    def validators_at(self, height: int) -> ValidatorSet | None:
        try:
            return self.ledger.validators_at(height)
        except KeyError:
            return None

    def epoch_start(self, height: int) -> int | None:
        try:
            return self.ledger.epoch_at(height)[0]
        except KeyError:
            return None

    def validate_proposal(
        self, height: int, payload: bytes, parent_block_id: bytes
    ) -> bytes | None:
        block = self.block_of(payload)
        if block is None or block.height != height or block.header.prev_block_id != parent_block_id:
            return None
        try:
            ex = self.ledger.validate(block, self.verified)
        except LedgerError as err:
            code = getattr(err, "code", type(err).__name__)
            self.invalid[code] = self.invalid.get(code, 0) + 1
            return None
        if self.on_valid is not None:
            self.on_valid(ex.block.tx_ids)
        return ex.block.block_id

    def tx_ids(self, payload: bytes) -> Sequence[bytes]:
        block = self.block_of(payload)
        return block.tx_ids if block is not None else ()
