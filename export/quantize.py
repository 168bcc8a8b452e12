"""Block-wise weight quantisation in the layouts onnxruntime's MatMulNBits and GatherBlockQuantized read.

A weight matrix [N, K] (N outputs, K inputs, the layout of a torch Linear) is cut into blocks of
`block` consecutive inputs; each block keeps one float scale (and, for 4 bits, one zero point).

- 8 bits, symmetric: q = round(w / s) in [-127, 127] with s = max|w| / 127, stored as q + 128 (the
  zero point both operators assume when none is given). This is llama.cpp's Q8_0; SmolLM2's shipped
  embedding is Q8_0 already, so it round-trips exactly.
- 4 bits, asymmetric: 16 levels spread from the block's minimum to its maximum, like llama.cpp's
  Q4_1 (the format SmolLM2's layers ship in), two values per byte, low nibble first.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class BlockQuantized:
    data: np.ndarray  # uint8 [N, K / block, block * bits / 8]
    scales: np.ndarray  # float32 [N, K / block]
    zero_points: np.ndarray | None  # uint8 [N, ceil(K / block / 2)] for 4 bits, else None
    bits: int
    block: int

    @property
    def n(self) -> int:
        return self.data.shape[0]

    @property
    def k(self) -> int:
        return self.data.shape[1] * self.block

    def dequantize(self) -> np.ndarray:
        """The float weights [N, K] these codes stand for (what the operators compute with)."""
        if self.bits == 8:
            q = self.data.astype(np.float32) - 128.0
            return (q * self.scales[:, :, None]).reshape(self.n, -1)
        lo, hi = self.data & 0x0F, self.data >> 4
        q = np.stack([lo, hi], axis=-1).reshape(self.n, self.data.shape[1], self.block).astype(np.float32)
        zp = np.stack([self.zero_points & 0x0F, self.zero_points >> 4], axis=-1).reshape(self.n, -1)
        zp = zp[:, : self.data.shape[1]].astype(np.float32)
        return ((q - zp[:, :, None]) * self.scales[:, :, None]).reshape(self.n, -1)


def quantize(weight: np.ndarray, bits: int, block: int = 32) -> BlockQuantized:
    """Quantise `weight` [N, K] in blocks of `block` along K (K is zero-padded to a whole block)."""
    if bits not in (4, 8):
        raise ValueError(f"only 4- and 8-bit weights are supported, not {bits}")
    n, k = weight.shape
    pad = -k % block
    w = np.pad(weight.astype(np.float32), ((0, 0), (0, pad))).reshape(n, -1, block)
    if bits == 8:
        scales = np.abs(w).max(axis=2) / 127.0
        safe = np.where(scales > 0, scales, 1.0)
        q = np.clip(np.rint(w / safe[:, :, None]), -127, 127) + 128
        return BlockQuantized(q.astype(np.uint8), scales.astype(np.float32), None, bits, block)
    lo, hi = np.minimum(w.min(axis=2), 0.0), np.maximum(w.max(axis=2), 0.0)
    scales = (hi - lo) / 15.0
    safe = np.where(scales > 0, scales, 1.0)
    zero = np.clip(np.rint(-lo / safe), 0, 15)
    q = np.clip(np.rint(w / safe[:, :, None]) + zero[:, :, None], 0, 15).astype(np.uint8)
    packed = q[:, :, 0::2] | (q[:, :, 1::2] << 4)
    zero = zero.astype(np.uint8)
    if zero.shape[1] % 2:
        zero = np.pad(zero, ((0, 0), (0, 1)))
    zero_packed = zero[:, 0::2] | (zero[:, 1::2] << 4)
    return BlockQuantized(packed, scales.astype(np.float32), zero_packed, bits, block)
