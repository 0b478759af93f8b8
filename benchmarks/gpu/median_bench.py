"""The alignment matrices' median filter on the GPU, alone: torch's ``median(dim)`` over
unfolded windows against ``alignment_heads.sliding_median`` (a compare-exchange network), at
W1's shape (45 chunks of large-v3: 10 alignment heads, 225 rows, 1,500 frames), whole and in
``PIECE_CELLS`` pieces, then ``alignment_matrix`` per piece as ``HeadAttention.matrices`` runs
it. Prints milliseconds per call (median of 5 after a warm-up) and peak memory.
    python3 benchmarks/gpu/median_bench.py
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F

from scenescribe.speech.alignment_heads import PIECE_CELLS, alignment_matrix, sliding_median


def timed(fn, repeats: int = 5) -> tuple[float, float]:
    fn()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2] * 1e3, torch.cuda.max_memory_allocated() / 2**30


def compare(padded: torch.Tensor) -> str:
    old_ms, old_gb = timed(lambda: padded.unfold(-1, 7, 1).median(dim=-1).values)
    new_ms, new_gb = timed(lambda: sliding_median(padded, 7))
    same = torch.equal(padded.unfold(-1, 7, 1).median(dim=-1).values, sliding_median(padded, 7))
    return (f"median(dim) {old_ms:.1f} ms ({old_gb:.1f} GiB peak), network {new_ms:.1f} ms "
            f"({new_gb:.1f} GiB peak), equal {same}")


def main() -> None:
    chunks, heads, rows, frames = 45, 10, 225, 1500
    per_chunk = heads * rows * frames
    piece = max(1, PIECE_CELLS // per_chunk)
    for count in (chunks, piece):
        x = torch.randn(count * heads, rows, frames, device="cuda")
        print(f"{count} chunks: {compare(F.pad(x, (3, 3), mode='reflect'))}")
        del x
    weights = torch.rand(piece, heads, rows, frames, device="cuda").softmax(-1)
    real = torch.full((piece,), rows, device="cuda")
    ms, gb = timed(lambda: alignment_matrix(weights, real))
    pieces = -(-chunks // piece)
    print(f"alignment_matrix, {piece} chunks a piece: {ms:.1f} ms ({gb:.1f} GiB peak); "
          f"{pieces} pieces for {chunks} chunks: about {ms * pieces:.0f} ms")


if __name__ == "__main__":
    main()
