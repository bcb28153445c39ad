"""The GPU runner's step inputs on the host, in numpy: block tables kept from one step to the next, and a decode
step's rows staged in the pinned buffers its CUDA graph reads from (pure array work, so the CPU tests cover it).

A step needs every scheduled sequence's block table as one padded int32 array. Converting each sequence's Python
list afresh costs ~2 µs a row (most of the 0.73 ms it took to stage a batch-256 decode step on a 2-core CPU,
benchmarks/host_overhead.py; on the host path that must keep up with the GPU),
while between two steps a decoding sequence gains at most one block. So each sequence keeps a row here, and a step
copies only the blocks appended since the last step it ran in; a whole row is written again only when the
sequence is new here or its table was replaced (preemption frees a table by replacing the list).
"""

import numpy as np


class _Row:
    __slots__ = ("blocks", "index", "synced")

    def __init__(self, blocks: list[int], index: int):
        self.blocks = blocks  # the sequence's own list: held, so its identity cannot be reused by another list
        self.index = index
        self.synced = 0  # leading blocks already copied into the row


class BlockTableMirror:
    def __init__(self, max_rows: int, max_blocks: int, fill: int):
        """`fill`: the block id every row holds past its sequence's last block (the runner's scratch block)."""
        self.table = np.full((max_rows, max_blocks), fill, np.int32)
        self.fill = fill
        self._free = list(range(max_rows - 1, -1, -1))
        self._rows: dict[str, _Row] = {}  # request id -> row, for the sequences of the last step

    def gather(self, seqs, width: int, out: np.ndarray) -> None:
        """Writes the first `width` block ids of each sequence's table into out[:len(seqs)], `fill` past the end
        of a table. Rows of sequences absent from this step are released (one that comes back is copied anew)."""
        previous, self._rows = self._rows, {}
        rows = [previous.pop(seq.request_id, None) for seq in seqs]
        self._free += [row.index for row in previous.values()]
        indices = np.empty(len(seqs), np.intp)
        for i, (seq, row) in enumerate(zip(seqs, rows)):
            blocks = seq.block_table
            if row is None:
                row = _Row(blocks, self._free.pop())
                self.table[row.index].fill(self.fill)
            elif row.blocks is not blocks or len(blocks) < row.synced:
                row.blocks, row.synced = blocks, 0
                self.table[row.index].fill(self.fill)
            if len(blocks) > row.synced:
                self.table[row.index, row.synced:len(blocks)] = blocks[row.synced:]
                row.synced = len(blocks)
            self._rows[seq.request_id] = row
            indices[i] = row.index
        np.take(self.table[:, :width], indices, axis=0, out=out[:len(seqs)])


def stage_decode(seqs, rows: np.ndarray, tables: np.ndarray, mirror: BlockTableMirror, block_size: int
                 ) -> tuple[int, bool]:
    """Fills a decode step's inputs for `seqs` (one new token each), padded to the graph's batch size
    `rows.shape[1]`: rows = [input ids, positions, slots, context lengths, pending rows, attention order] and the
    block tables, written as [batch size, width] at the start of the flat `tables`. A pending row >= 0 says that
    input id is still on the GPU, in that row of the previous step's tokens; padding rows write to and read the fill
    block. The attention order lists the rows longest context first (the decode kernel's launch order).
    Returns (width, whether any input is pending)."""
    n, bs = len(seqs), rows.shape[1]
    ids, positions, slots, context_lens, pending_rows, order = rows
    ids[:n] = [seq.token_ids[-1] for seq in seqs]
    pending_rows[:n] = [seq.pending_row if seq.num_pending else -1 for seq in seqs]
    context_lens[:n] = [len(seq) for seq in seqs]
    positions[:n] = context_lens[:n] - 1
    width = -(-int(context_lens[:n].max()) // block_size)
    table = tables[:bs * width].reshape(bs, width)
    mirror.gather(seqs, width, table)
    table[n:] = mirror.fill
    slots[:n] = table[np.arange(n), positions[:n] // block_size] * block_size + positions[:n] % block_size
    ids[n:], positions[n:], slots[n:], context_lens[n:], pending_rows[n:] = 0, 0, mirror.fill * block_size, 1, -1
    order[:] = np.argsort(-context_lens, kind="stable")
    return width, bool((pending_rows[:n] >= 0).any())
