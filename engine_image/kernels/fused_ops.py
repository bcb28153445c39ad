"""Triton versions of the small per-layer operations, one launch each instead of the 5-20 that PyTorch's eager ops
take. In a decode step the weights are read once and each launch costs a few microseconds whatever its size, so
with ~60 launches a layer the launches, not the bytes, set the step time.

Each computes what the PyTorch layer in fleetserve.engine.layers computes, rounding at the same points (float32
math, bf16 results), so the GPU path stays as close to HF transformers as the CPU path.
"""

import torch
import triton
import triton.language as tl

from fleetserve.engine.kernels.dependent_launch import pdl, wait_for_previous


@triton.jit
def _round_like_hf(x, rstd, w, dtype: tl.constexpr):
    """The last part of RMSNorm as HF rounds it: normalise in fp32, cast to dtype, then scale by the weight, cast."""
    return (w * (x * rstd).to(dtype).to(tl.float32)).to(dtype)


@triton.jit
def _scaled_norm(x, w_ptr, cols, mask, n_cols, eps, dtype: tl.constexpr):
    """RMSNorm of one fp32 row."""
    rstd = 1.0 / tl.sqrt(tl.sum(x * x, 0) / n_cols + eps)
    return _round_like_hf(x, rstd, tl.load(w_ptr + cols, mask=mask, other=0.0).to(tl.float32), dtype)


@triton.jit
def _rms_norm_kernel(x_ptr, w_ptr, out_ptr, heads, token_stride, head_stride, n_cols, eps, BLOCK: tl.constexpr,
                     PDL: tl.constexpr):
    """One row of n_cols; row r is head r % heads of token r // heads (heads = 1 for a plain 2-D input)."""
    wait_for_previous(PDL)
    row = tl.program_id(0)
    cols = tl.arange(0, BLOCK)
    mask = cols < n_cols
    src = (row // heads).to(tl.int64) * token_stride + (row % heads) * head_stride
    x = tl.load(x_ptr + src + cols, mask=mask, other=0.0).to(tl.float32)
    out = _scaled_norm(x, w_ptr, cols, mask, n_cols, eps, out_ptr.dtype.element_ty)
    tl.store(out_ptr + row.to(tl.int64) * n_cols + cols, out, mask=mask)


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """RMSNorm over the last dimension of a 2-D [tokens, n] or 3-D [tokens, heads, n] x whose last dimension is
    contiguous (a per-head view of the fused qkv output is read in place, no copy); returns a contiguous tensor."""
    assert x.dim() in (2, 3) and x.stride(-1) == 1
    n_cols = x.shape[-1]
    heads, head_stride = (x.shape[1], x.stride(1)) if x.dim() == 3 else (1, 0)
    out = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    _rms_norm_kernel[(x.numel() // n_cols,)](x, weight, out, heads, x.stride(0), head_stride, n_cols, eps,
                                             BLOCK=triton.next_power_of_2(n_cols), num_warps=_norm_warps(n_cols),
                                             **pdl(x))
    return out


@triton.jit
def _add_rms_norm_kernel(x_ptr, residual_ptr, w_ptr, out_ptr, sum_ptr, x_stride, residual_stride, n_cols, eps,
                         BLOCK: tl.constexpr, PDL: tl.constexpr):
    """One token: sum = x + residual, rounded to the dtype (HF adds in bf16), then RMSNorm of that sum."""
    wait_for_previous(PDL)
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK)
    mask = cols < n_cols
    x = tl.load(x_ptr + row * x_stride + cols, mask=mask, other=0.0).to(tl.float32)
    residual = tl.load(residual_ptr + row * residual_stride + cols, mask=mask, other=0.0).to(tl.float32)
    total = (x + residual).to(sum_ptr.dtype.element_ty)
    tl.store(sum_ptr + row * n_cols + cols, total, mask=mask)
    out = _scaled_norm(total.to(tl.float32), w_ptr, cols, mask, n_cols, eps, out_ptr.dtype.element_ty)
    tl.store(out_ptr + row * n_cols + cols, out, mask=mask)


def add_rms_norm(x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor,
                 eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """x, residual: [tokens, n] (rows contiguous) -> (RMSNorm(x + residual), x + residual) in one launch, both new
    contiguous tensors: each input is read once and nothing is written in place."""
    assert x.dim() == 2 and x.shape == residual.shape and x.stride(1) == 1 and residual.stride(1) == 1
    tokens, n_cols = x.shape
    out = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    total = torch.empty_like(out)
    _add_rms_norm_kernel[(tokens,)](x, residual, weight, out, total, x.stride(0), residual.stride(0), n_cols, eps,
                                    BLOCK=triton.next_power_of_2(n_cols), num_warps=_norm_warps(n_cols), **pdl(x))
    return out, total


def _norm_warps(n_cols: int) -> int:
    return 4 if n_cols <= 2048 else 8


@triton.jit
def _silu_and_mul_kernel(x_ptr, out_ptr, n_cols, BLOCK: tl.constexpr, PDL: tl.constexpr):
    wait_for_previous(PDL)
    row = tl.program_id(0)
    cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    mask = cols < n_cols
    gate = tl.load(x_ptr + row * 2 * n_cols + cols, mask=mask, other=0.0).to(tl.float32)
    up = tl.load(x_ptr + row * 2 * n_cols + n_cols + cols, mask=mask, other=0.0).to(tl.float32)
    act = (gate / (1.0 + tl.exp(-gate))).to(out_ptr.dtype.element_ty).to(tl.float32)  # torch rounds silu first
    tl.store(out_ptr + row * n_cols + cols, (act * up).to(out_ptr.dtype.element_ty), mask=mask)


def silu_and_mul(x: torch.Tensor) -> torch.Tensor:
    """x: [tokens, 2 * n] (gate then up, contiguous) -> silu(gate) * up: [tokens, n]."""
    tokens, n_cols = x.shape[0], x.shape[1] // 2
    out = torch.empty(tokens, n_cols, dtype=x.dtype, device=x.device)
    block = 1024
    _silu_and_mul_kernel[(tokens, triton.cdiv(n_cols, block))](x, out, n_cols, BLOCK=block, num_warps=4,
                                                                 **pdl(x))
    return out


@triton.jit
def _rotate_heads(row, head_stride, w_ptr, cos, sin, n_heads, eps, HALF: tl.constexpr, HEADS_PAD: tl.constexpr,
                  QK_NORM: tl.constexpr):
    """n_heads heads of a token, head_stride apart, each [x1 | x2]: optional RMSNorm over the whole head (weights
    at w_ptr), then neox-style rotary in fp32: x1' = x1 cos - x2 sin, x2' = x2 cos + x1 sin. Returns the rotated
    halves, rounded once to the row's dtype, and the mask of real heads."""
    dtype = row.dtype.element_ty
    heads = tl.arange(0, HEADS_PAD)[:, None]
    dims = tl.arange(0, HALF)[None, :]
    mask = heads < n_heads
    x1 = tl.load(row + heads * head_stride + dims, mask=mask, other=0.0).to(tl.float32)
    x2 = tl.load(row + heads * head_stride + HALF + dims, mask=mask, other=0.0).to(tl.float32)
    if QK_NORM:  # Qwen3: RMSNorm over each head, both halves
        rstd = 1.0 / tl.sqrt((tl.sum(x1 * x1, 1) + tl.sum(x2 * x2, 1)) / (2 * HALF) + eps)[:, None]
        x1 = _round_like_hf(x1, rstd, tl.load(w_ptr + dims).to(tl.float32), dtype).to(tl.float32)
        x2 = _round_like_hf(x2, rstd, tl.load(w_ptr + HALF + dims).to(tl.float32), dtype).to(tl.float32)
    return (x1 * cos - x2 * sin).to(dtype), (x2 * cos + x1 * sin).to(dtype), mask


@triton.jit
def _rotary_one(x_ptr, token, cos, sin, token_stride, head_stride, n_heads, w_ptr, eps, HALF: tl.constexpr,
                HEADS_PAD: tl.constexpr, QK_NORM: tl.constexpr):
    """A token's n_heads heads through `_rotate_heads`, written back in place."""
    row = x_ptr + token.to(tl.int64) * token_stride
    out1, out2, mask = _rotate_heads(row, head_stride, w_ptr, cos, sin, n_heads, eps, HALF, HEADS_PAD, QK_NORM)
    dst = row + tl.arange(0, HEADS_PAD)[:, None] * head_stride + tl.arange(0, HALF)[None, :]
    tl.store(dst, out1, mask=mask)
    tl.store(dst + HALF, out2, mask=mask)


@triton.jit
def _rotary_kernel(q_ptr, k_ptr, positions_ptr, cos_sin_ptr, q_token_stride, q_head_stride, k_token_stride,
                   k_head_stride, q_heads, k_heads, HALF: tl.constexpr, Q_PAD: tl.constexpr, K_PAD: tl.constexpr,
                   PDL: tl.constexpr):
    wait_for_previous(PDL)
    token = tl.program_id(0)
    pos = tl.load(positions_ptr + token)
    dims = tl.arange(0, HALF)
    cos = tl.load(cos_sin_ptr + pos * 2 * HALF + dims)[None, :]
    sin = tl.load(cos_sin_ptr + pos * 2 * HALF + HALF + dims)[None, :]
    _rotary_one(q_ptr, token, cos, sin, q_token_stride, q_head_stride, q_heads, q_ptr, 0.0, HALF, Q_PAD, False)
    _rotary_one(k_ptr, token, cos, sin, k_token_stride, k_head_stride, k_heads, k_ptr, 0.0, HALF, K_PAD, False)


def rotary_(q: torch.Tensor, k: torch.Tensor, positions: torch.Tensor, cos_sin: torch.Tensor):
    """q: [tokens, heads, head_dim], k: [tokens, kv_heads, head_dim] (head rows contiguous, token stride free),
    both rotated in place in one launch; cos_sin: the RotaryEmbedding table [max_position, head_dim] (cos half,
    then sin half), float32."""
    tokens, q_heads, head_dim = q.shape
    k_heads = k.shape[1]
    assert q.stride(2) == 1 and k.stride(2) == 1
    _rotary_kernel[(tokens,)](q, k, positions, cos_sin, q.stride(0), q.stride(1), k.stride(0), k.stride(1),
                              q_heads, k_heads, HALF=head_dim // 2, Q_PAD=triton.next_power_of_2(q_heads),
                              K_PAD=triton.next_power_of_2(k_heads), num_warps=4, **pdl(q))
    return q, k


@triton.jit
def _rotate_and_store_kv_kernel(qkv_ptr, positions_ptr, cos_sin_ptr, q_weight_ptr, k_weight_ptr, k_cache_ptr,
                                v_cache_ptr, slots_ptr, token_stride, eps, Q_HEADS: tl.constexpr,
                                KV_HEADS: tl.constexpr, HALF: tl.constexpr, Q_PAD: tl.constexpr,
                                KV_PAD: tl.constexpr, V_PAD: tl.constexpr, QK_NORM: tl.constexpr,
                                PDL: tl.constexpr):
    """Two programs a token of the fused qkv row: the first rotates every q head in place; the second rotates every
    k head and stores them with the v heads at the token's cache slot (slot < 0: a padding row of a captured
    batch, nothing stored). Not a program a head: the kernel is a chain of dependent loads (position, then cos/sin)
    whose latency, not its few kilobytes, sets its time, and Qwen3's 24 one-warp programs a token made 1.5 waves of
    them at batch 256. Rounds where the unfused layers round: the q/k RMSNorm result, then rotary. A token's k takes
    the same path in every batch, decode or prefill, so its cached bits depend on neither."""
    wait_for_previous(PDL)
    token = tl.program_id(0)
    is_k = tl.program_id(1) == 1
    dims = tl.arange(0, HALF)[None, :]
    pos = tl.load(positions_ptr + token)
    cos = tl.load(cos_sin_ptr + pos * 2 * HALF + dims)
    sin = tl.load(cos_sin_ptr + pos * 2 * HALF + HALF + dims)
    if not is_k:
        _rotary_one(qkv_ptr, token, cos, sin, token_stride, 2 * HALF, Q_HEADS, q_weight_ptr, eps, HALF, Q_PAD,
                    QK_NORM)
    else:
        slot = tl.load(slots_ptr + token).to(tl.int64)
        if slot >= 0:
            k_row = qkv_ptr + token.to(tl.int64) * token_stride + Q_HEADS * 2 * HALF
            out1, out2, mask = _rotate_heads(k_row, 2 * HALF, k_weight_ptr, cos, sin, KV_HEADS, eps, HALF, KV_PAD,
                                               QK_NORM)
            dst = k_cache_ptr + slot * KV_HEADS * 2 * HALF + tl.arange(0, KV_PAD)[:, None] * 2 * HALF + dims
            tl.store(dst, out1, mask=mask)
            tl.store(dst + HALF, out2, mask=mask)
            v = tl.arange(0, V_PAD)
            v_mask = v < KV_HEADS * 2 * HALF
            tl.store(v_cache_ptr + slot * KV_HEADS * 2 * HALF + v,
                     tl.load(k_row + KV_HEADS * 2 * HALF + v, mask=v_mask), mask=v_mask)


def rotate_and_store_kv(qkv: torch.Tensor, positions: torch.Tensor, cos_sin: torch.Tensor, num_heads: int,
                        num_kv_heads: int, k_cache: torch.Tensor, v_cache: torch.Tensor, slots: torch.Tensor,
                        q_weight: torch.Tensor | None = None, k_weight: torch.Tensor | None = None,
                        eps: float = 0.0) -> torch.Tensor:
    """The attention's work between the qkv projection and the attention kernel, in one launch: optional per-head
    q/k RMSNorm (q_weight, k_weight: Qwen3), rotary on q and k, k and v written to their cache slots.

    qkv: [tokens, (num_heads + 2 * num_kv_heads) * head_dim], rows contiguous; cos_sin as in `rotary_`; caches
    [num_blocks, block_size, num_kv_heads, head_dim]. Returns q: [tokens, num_heads, head_dim], a view of qkv
    rotated in place (k in qkv is left as it was: only the cache copy is read again)."""
    tokens, width = qkv.shape
    head_dim = width // (num_heads + 2 * num_kv_heads)
    assert qkv.stride(1) == 1 and width == (num_heads + 2 * num_kv_heads) * head_dim
    qk_norm = q_weight is not None
    _rotate_and_store_kv_kernel[(tokens, 2)](
        qkv, positions, cos_sin, q_weight if qk_norm else qkv, k_weight if qk_norm else qkv, k_cache, v_cache,
        slots, qkv.stride(0), eps, Q_HEADS=num_heads, KV_HEADS=num_kv_heads, HALF=head_dim // 2,
        Q_PAD=triton.next_power_of_2(num_heads), KV_PAD=triton.next_power_of_2(num_kv_heads),
        V_PAD=triton.next_power_of_2(num_kv_heads * head_dim), QK_NORM=qk_norm, num_warps=4, **pdl(qkv),
    )
    return qkv[:, :num_heads * head_dim].view(tokens, num_heads, head_dim)


@triton.jit(do_not_specialize=["n"])
def _take_pending_kernel(ids_ptr, pending_rows_ptr, tokens_ptr, n, BLOCK: tl.constexpr):
    i = tl.arange(0, BLOCK)
    rows = tl.load(pending_rows_ptr + i, mask=i < n, other=-1)
    pending = rows >= 0
    tl.store(ids_ptr + i, tl.load(tokens_ptr + rows, mask=pending), mask=pending)


def take_pending(ids: torch.Tensor, pending_rows: torch.Tensor, tokens: torch.Tensor, n: int) -> None:
    """ids[i] = tokens[pending_rows[i]] for i < n wherever pending_rows[i] >= 0, in place, in one launch. ids and
    pending_rows (int64) are whole staging buffers, so one compiled kernel serves every batch size."""
    _take_pending_kernel[(1,)](ids, pending_rows, tokens, n, BLOCK=triton.next_power_of_2(ids.shape[0]))
