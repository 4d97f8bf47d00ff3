"""Weight-only int4 for the CPU (`--quantize int4`): the decoder's linear layers and the LM
head, group-wise (128 weights per scale and zero point), over torch's own kernel
`aten._weight_int4pack_mm_for_cpu`.

Why not a library: torchao 0.18's stable Int4WeightOnlyConfig needs a CUDA-only kernel
package here, its CPU int4 tensor is a prototype, and peft's LoRA layers accept torchao
weights only in int8; bitsandbytes' 4-bit runs ~5x slower than bf16 on the CPU. The module
below is a plain nn.Linear subclass, so peft wraps it with the vision and speech LoRA like
any other layer.

torch's kernel is ~3x faster than bf16 for one row (a decode step) but ~12x slower for a
thousand (a prefill), so past PREFILL_ROWS rows the layer dequantizes its weights into a
buffer shared by all layers of that shape and uses the ordinary matmul: in the compute dtype
where the CPU multiplies bf16 natively (AMX, AVX-512 BF16), else in float32 (see NATIVE_BF16).
The dequantization is one numba loop (numba comes with librosa): torch's own ops needed four
passes over the weight (nibbles, scale, transpose) and cost ~3 s per prompt at full size.

Loading reads the checkpoint tensor by tensor and quantizes each target weight as it
arrives, so the bf16 model never sits in memory whole. The result is written once to an
on-disk cache (int4_cache.py) that later loads map instead."""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from pathlib import Path
from typing import IO, Any, Callable, Iterator

import numba
import numpy as np
import torch
from accelerate import init_empty_weights
from accelerate.utils import set_module_tensor_to_device
from torch import nn
from transformers import AutoConfig, GenerationConfig, Phi4MultimodalForCausalLM
from transformers.initialization import no_init_weights

from phi_demo.caches import ByteLRU, register
from phi_demo.engine.int4_cache import (
    QUANTIZER_VERSION,
    CacheDamaged,
    Expected,
    Int4Cache,
    cache_key,
    checkpoint_identity,
    describe_difference,
)

log = logging.getLogger(__name__)

# In the cache key too: the rule in words, so changing group_size() without bumping the
# version still misses.
GROUP_RULE = "asymmetric int4, group = the largest of 128/64/32 dividing in_features, 64-row blocks, " \
    "inner k tiles 8; token embedding int8, one symmetric scale per row"


def _native_bf16() -> bool:
    try:
        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    except AttributeError:  # an older torch: assume the worst, float32 is right everywhere
        return False


# Without AMX or AVX-512 BF16, torch multiplies bf16 matrices in software: on a 2-core
# AVX2-only AMD EPYC one layer's four matrices took 476 ms for 47 rows against 242 ms in
# float32, and x @ w with w stored [in, out] (our dequantized layout) took 31 s for one
# 3072x16384 matrix. There the dense path runs in float32.
NATIVE_BF16 = _native_bf16()
# Decode steps (and short prompts) use the kernel; longer inputs dequantize. Where the
# kernel stops paying, per layer on 2 cores: 32 rows with AMX (the kernel ~1.25 ms per row
# on a 3072x16384 weight, dequantizing ~40 ms); 128 rows on AVX2 in float32 (128 rows: kernel
# 496 ms, dequantize + matmul 550 ms; 512 rows: 3.4 s against 1.2 s).
PREFILL_ROWS = 32 if NATIVE_BF16 else 128
# Weights are padded to a multiple of 64 output rows: the kernel's packed layout puts 64
# rows in a block (two nibbles of 32 rows each) where torch was built for AVX-512, and 32
# rows (nibbles of 16) on AVX2-only CPUs — see pack_block().
BLOCK_N = 64
EMBEDDING = "model.embed_tokens"
TARGETS = re.compile(r"(model\.layers\.\d+\.(self_attn\.(qkv_proj|o_proj)|mlp\.(gate_up_proj|down_proj))|lm_head)$")


def group_size(in_features: int) -> int | None:
    for g in (128, 64, 32):
        if in_features % g == 0:
            return g
    return None


# Rows quantized at a time (a multiple of BLOCK_N): the LM head in float32 at once would
# take 2.5 GB per temporary, and the kernel's blocks of 64 rows pack independently.
CHUNK_ROWS = 4096


def quantize_weight(weight: torch.Tensor, group: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """(packed weight, scales and zeros [in/group, out, 2]) for weight [out, in], rows padded to BLOCK_N.

    Asymmetric per group: q = round((w - min) / scale) in 0..15 with scale = (max - min) / 15,
    stored as the kernel wants it: w = (q - 8) * scale + zero, zero = min + 8 * scale."""
    n, k = weight.shape
    packed, scales_zeros = [], []
    for start in range(0, n, CHUNK_ROWS):
        w = weight[start:start + CHUNK_ROWS].detach().to(torch.float32, copy=True)  # quantized in place below
        rows = w.shape[0]
        padded = -(-rows // BLOCK_N) * BLOCK_N
        if padded != rows:
            w = torch.cat([w, w.new_zeros(padded - rows, k)])
        w = w.view(padded, k // group, group)
        lo, hi = w.amin(-1, keepdim=True), w.amax(-1, keepdim=True)
        scale = ((hi - lo) / 15).clamp_(min=1e-8)
        q = w.sub_(lo).div_(scale).round_().clamp_(0, 15).to(torch.int32).view(padded, k)
        zero = lo + 8 * scale
        scales_zeros.append(torch.stack([scale.squeeze(-1), zero.squeeze(-1)], dim=-1).transpose(0, 1).to(dtype))
        packed.append(torch.ops.aten._convert_weight_to_int4pack_for_cpu(q, 8))
    return torch.cat(packed), torch.cat(scales_zeros, dim=1).contiguous()


_pack_block: int | None = None


def pack_block() -> int:
    """Output rows per block in the packed layout of this machine's kernel: torch picks it by
    CPU capability at run time (64 with AVX-512, 32 on an AVX2-only AMD EPYC here). Found by
    packing one marked row rather than trusting a capability name."""
    global _pack_block
    if _pack_block is None:
        q = torch.zeros(BLOCK_N, 32, dtype=torch.int32)
        q[1] = 15  # row 1 is always a low nibble; the row that shares its byte is row 1 + block/2
        packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(q, 8).reshape(-1)
        byte = int(packed[(packed != 0).nonzero()[0, 0]])
        if byte != 0x0F:
            raise RuntimeError(f"unexpected int4 packing (0x{byte:02x})")
        q[1], q[1 + 16] = 0, 15
        packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(q, 8).reshape(-1)
        _pack_block = 32 if int(packed[1]) == 0xF0 else 64
    return _pack_block


# A dense weight of each shape (per thread and dtype), reused by every layer of that shape: the
# largest, gate_up at full size, is 100 MB in bf16 and 200 MB in float32.
SCRATCH_BUDGET_BYTES = 1 << 30
_ScratchKey = tuple[int, tuple[int, ...], torch.dtype]
_scratch: ByteLRU[_ScratchKey, torch.Tensor] = register(
    "int4 dequantization buffers", ByteLRU(SCRATCH_BUDGET_BYTES, lambda t: t.nbytes), model_tied=True)


def _buffer(shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    """One dequantization buffer per weight shape, shared by all layers: they run one after another."""
    return _scratch.get_or_make((threading.get_ident(), shape, dtype), lambda: torch.empty(shape, dtype=dtype))


class Int4Linear(nn.Linear):
    qweight: torch.Tensor  # packed for the kernel: [out padded, in / 2] bytes
    scales_zeros: torch.Tensor  # [in / group, out padded, 2] in the compute dtype

    def __init__(self, in_features: int, out_features: int, packed: torch.Tensor, scales_zeros: torch.Tensor,
                 group: int, bias: torch.Tensor | None = None) -> None:
        nn.Module.__init__(self)
        self.in_features, self.out_features, self.group = in_features, out_features, group
        self.compute_dtype = scales_zeros.dtype  # peft reads it for the LoRA weights' dtype
        # The LM head (200,064 outputs) would need a 1.2 GB buffer: it always uses the kernel,
        # and generate() asks it for the last position only.
        self.dequantize_long_inputs = out_features * in_features * 2 <= 512 << 20
        self.register_parameter("weight", None)
        self.register_buffer("qweight", packed)
        self.register_buffer("scales_zeros", scales_zeros)
        self.bias = None if bias is None else nn.Parameter(bias.to(scales_zeros.dtype), requires_grad=False)

    @classmethod
    def from_weight(cls, weight: torch.Tensor, bias: torch.Tensor | None, dtype: torch.dtype) -> "Int4Linear":
        out_features, in_features = weight.shape
        group = group_size(in_features)
        if group is None:
            raise ValueError(f"no int4 group size divides {in_features} input features")
        packed, scales_zeros = quantize_weight(weight, group, dtype)
        return cls(in_features, out_features, packed, scales_zeros, group, bias)

    @property
    def padded_out(self) -> int:
        return int(self.qweight.shape[0])

    @property
    def dense_dtype(self) -> torch.dtype:
        """The dtype of the dense path's matmul (the module docstring says why it may differ)."""
        return self.compute_dtype if NATIVE_BF16 else torch.float32

    def dequantized_t(self, dtype: torch.dtype | None = None) -> torch.Tensor:
        """The weight, transposed ([in, out padded]), in `dtype` (default: the compute dtype),
        in a shared buffer."""
        k, n, dtype = self.in_features, self.padded_out, dtype or self.compute_dtype
        wt = _buffer((k, n), dtype)
        block = pack_block()
        packed = self.qweight.view(n // block, k, block // 2).numpy()
        # Contiguous float32 scales and zeros ([k / group, n], 3 MB for the largest layer):
        # read in the kernel's interleaved pairs, the loop did not vectorise.
        scale = self.scales_zeros[..., 0].float().numpy()
        zero = self.scales_zeros[..., 1].float().numpy()
        with _numba_lock:  # numba's thread pool may not take two callers at once
            if dtype == torch.bfloat16:
                _dequantize_bf16(packed, scale, zero, self.group, wt.view(torch.int16).numpy().view(np.uint16))
            elif dtype == torch.float32:
                _dequantize_f32(packed, scale, zero, self.group, wt.numpy())
            else:
                wide = _buffer((k, n), torch.float32)
                _dequantize_f32(packed, scale, zero, self.group, wide.numpy())
                wt.copy_(wide)
        return wt

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        x2 = x.reshape(-1, self.in_features).to(self.compute_dtype)
        if x2.shape[0] <= PREFILL_ROWS or not self.dequantize_long_inputs:
            y = torch.ops.aten._weight_int4pack_mm_for_cpu(x2.contiguous(), self.qweight, self.group,
                                                            self.scales_zeros)
        else:
            dense = self.dense_dtype
            y = (x2.to(dense) @ self.dequantized_t(dense)).to(self.compute_dtype)
        if self.padded_out != self.out_features:
            y = y[:, : self.out_features]
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(*shape[:-1], self.out_features).to(x.dtype)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int4 group {self.group}"


_numba_lock = threading.Lock()


@numba.njit(fastmath=True, cache=True, inline="always")
def _dequantize_row(packed: np.ndarray, scale: np.ndarray, zero: np.ndarray, g: int, kk: int,
                    row: np.ndarray) -> None:  # pragma: no cover - compiled by numba
    """row[n] = w.T[kk] from the kernel's layout: packed[n / B, k, B / 2] (B = pack_block())
    holds output rows b*B + r in the low nibble and b*B + B/2 + r in the high one; w = (q - 8) * scale + zero,
    with scale and zero [k / group, n]."""
    blocks, _, half = packed.shape
    for b in range(blocks):
        c = b * 2 * half
        for r in range(half):
            byte = packed[b, kk, r]
            row[c + r] = np.float32((byte & 15) - 8) * scale[g, c + r] + zero[g, c + r]
            row[c + half + r] = np.float32((byte >> 4) - 8) * scale[g, c + half + r] + zero[g, c + half + r]


@numba.njit(parallel=True, fastmath=True, cache=True)
def _dequantize_f32(packed: np.ndarray, scale: np.ndarray, zero: np.ndarray, group: int,
                    out: np.ndarray) -> None:  # pragma: no cover - compiled by numba
    for kk in numba.prange(packed.shape[1]):
        _dequantize_row(packed, scale, zero, kk // group, kk, out[kk])


@numba.njit(parallel=True, fastmath=True, cache=True)
def _dequantize_bf16(packed: np.ndarray, scale: np.ndarray, zero: np.ndarray, group: int,
                     out: np.ndarray) -> None:  # pragma: no cover - compiled by numba
    """As _dequantize_f32, written as bfloat16 bits (numpy has no bfloat16): each row goes
    through float32, then rounds to nearest even as torch's own conversion does."""
    for kk in numba.prange(packed.shape[1]):
        row = np.empty(out.shape[1], np.float32)
        _dequantize_row(packed, scale, zero, kk // group, kk, row)
        bits = row.view(np.uint32)
        out[kk, :] = ((bits + np.uint32(0x7FFF) + ((bits >> np.uint32(16)) & np.uint32(1)))
                      >> np.uint32(16)).astype(np.uint16)


def check_kernel() -> str | None:
    """None if torch's int4 kernel runs here and our dequantization reads its layout right;
    else why not (the caller refuses int4 with that reason rather than computing garbage)."""
    try:
        torch.manual_seed(0)
        w = torch.randn(2 * BLOCK_N, 256)
        layer = Int4Linear.from_weight(w, None, torch.float32)
        x = torch.randn(3, 256)
        kernel = layer(x)
        full = layer.dequantized_t()
        dense = x @ full[:, : layer.out_features]
        err = float((kernel - dense).norm() / dense.norm())
        ref = float((kernel - x @ w.T).norm() / (x @ w.T).norm())
    except (RuntimeError, NotImplementedError) as e:
        return f"this torch build has no CPU int4 kernel ({str(e).splitlines()[0][:120]})"
    if err > 1e-3 or ref > 0.2:
        return f"the CPU int4 kernel's layout is not the one expected (mismatch {err:.3f})"
    try:  # the bfloat16 loop too: compiled here, at load, rather than in the first long prompt
        bf16 = Int4Linear.from_weight(w, None, torch.bfloat16).dequantized_t().float()
        rounding = float((bf16 - full).norm() / full.norm())
    except Exception as e:  # noqa: BLE001 - numba could not compile here: int4 is refused with why
        return f"the int4 dequantization loop does not compile here ({str(e).splitlines()[0][:120]})"
    if rounding > 1e-2:
        return f"the bfloat16 dequantization is off by {rounding:.3f}"
    return None


class Int8Embedding(nn.Embedding):
    """The token embedding in int8, one scale per row (symmetric): half of bf16's 1.2 GB at
    full size. A lookup dequantizes only the rows it reads."""

    qweight: torch.Tensor  # [rows, dim] int8
    scale: torch.Tensor  # [rows, 1] float32

    def __init__(self, qweight: torch.Tensor, scale: torch.Tensor, padding_idx: int | None, dtype: torch.dtype) -> None:
        nn.Module.__init__(self)
        self.num_embeddings, self.embedding_dim = qweight.shape
        self.padding_idx, self.max_norm, self.norm_type = padding_idx, None, 2.0
        self.scale_grad_by_freq, self.sparse = False, False
        self.compute_dtype = dtype
        self.register_parameter("weight", None)
        self.register_buffer("qweight", qweight)
        self.register_buffer("scale", scale)  # [rows, 1], float32

    @classmethod
    def from_weight(cls, weight: torch.Tensor, padding_idx: int | None, dtype: torch.dtype) -> "Int8Embedding":
        q = torch.empty(weight.shape, dtype=torch.int8)
        scale = torch.empty(weight.shape[0], 1)
        for start in range(0, weight.shape[0], CHUNK_ROWS):
            w = weight[start:start + CHUNK_ROWS].to(torch.float32, copy=True)  # divided in place below
            s = (w.abs().amax(-1, keepdim=True) / 127).clamp_(min=1e-8)
            q[start:start + CHUNK_ROWS] = w.div_(s).round_().clamp_(-127, 127).to(torch.int8)
            scale[start:start + CHUNK_ROWS] = s
        return cls(q, scale, padding_idx, dtype)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        rows = nn.functional.embedding(ids, self.qweight).float()
        return (rows * nn.functional.embedding(ids, self.scale)).to(self.compute_dtype)

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}, int8 per row"


def quantized_modules(model: nn.Module) -> list[str]:
    return [name for name, m in model.named_modules() if isinstance(m, (Int4Linear, Int8Embedding))]


def quantization_plan(model: nn.Module) -> dict[str, dict[str, Any]]:
    """What load_int4 quantizes, read from the model's skeleton: module name -> kind and sizes."""
    plan: dict[str, dict[str, Any]] = {}
    for name, m in model.named_modules():
        if TARGETS.search(name) and isinstance(m, nn.Linear) and group_size(m.in_features) is not None:
            plan[name] = {"kind": "int4", "in": m.in_features, "out": m.out_features,
                          "group": group_size(m.in_features)}
    embedding = _embedding(model, EMBEDDING)
    plan[EMBEDDING] = {"kind": "int8", "rows": embedding.num_embeddings, "dim": embedding.embedding_dim}
    return plan


def expected_tensors(model: nn.Module, plan: dict[str, dict[str, Any]],
                     dtype: torch.dtype) -> tuple[Expected, set[str]]:
    """(name -> (dtype, shape) of every tensor a loaded int4 model holds, the names that may
    be missing), from the skeleton: what a cache entry must contain."""
    spec: Expected = {}
    optional: set[str] = set()
    for name, t in model.state_dict(keep_vars=True).items():
        if name.rpartition(".")[0] not in plan:
            spec[name] = (t.dtype, tuple(t.shape))
    for name, p in plan.items():
        if p["kind"] == "int4":
            padded = -(-p["out"] // BLOCK_N) * BLOCK_N
            spec[name + ".qweight"] = (torch.uint8, (padded, p["in"] // 2))
            spec[name + ".scales_zeros"] = (dtype, (p["in"] // p["group"], padded, 2))
            spec[name + ".bias"] = (dtype, (p["out"],))  # kept if the checkpoint has one
            optional.add(name + ".bias")
        else:
            spec[name + ".qweight"] = (torch.int8, (p["rows"], p["dim"]))
            spec[name + ".scale"] = (torch.float32, (p["rows"], 1))
    return spec, optional


def load_int4(folder: Path, dtype: torch.dtype, attn: str, cache: Int4Cache | None = None,
              progress: Callable[[str], None] | None = None) -> Phi4MultimodalForCausalLM:
    """Phi4MultimodalForCausalLM from `folder` with its decoder linears and LM head in int4,
    quantized one tensor at a time as the checkpoint is read — or, when `cache` (an
    int4_cache.Int4Cache) holds this checkpoint already, mapped from there. `progress` gets
    sentences for the page; the model's `int4_cache_note` says what the cache did."""


    say = progress or (lambda message: None)
    folder = Path(folder)
    model = _skeleton(folder, dtype, attn)
    index = folder / "model.safetensors.index.json"
    weight_map = json.loads(index.read_text())["weight_map"] if index.is_file() else None
    files = sorted(set(weight_map.values())) if weight_map else ["model.safetensors"]
    plan = quantization_plan(model)
    note, key, parts = "", None, None
    if cache is not None:
        try:
            identity = checkpoint_identity(folder, files)
        except OSError as e:
            log.warning("int4 cache: cannot identify the checkpoint in %s (%s); not using the cache", folder, e)
            cache = None
    if cache is not None:
        key, parts = cache_key(identity, quantizer_version=QUANTIZER_VERSION, group_rule=GROUP_RULE,
                               dtype=str(dtype), torch=torch.__version__, pack_block=pack_block(),
                               cpu_capability=torch.backends.cpu.get_cpu_capability(),
                               quantized=sorted((n, p["kind"], p.get("group")) for n, p in plan.items()))
        start = time.perf_counter()
        damage = None
        try:
            if cache.entry(key).is_dir():
                say("Reading the int4 weights from the cache…")
            tensors = cache.read(key, *expected_tensors(model, plan, dtype))
            if tensors is not None:
                _fill(model, plan, tensors, dtype)
        except CacheDamaged as e:
            damage, tensors = str(e), None
        except Exception as e:  # noqa: BLE001 - a bad entry is rebuilt, never a failed start
            cache.remove(cache.entry(key))
            damage, tensors = f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}", None
        if tensors is not None:
            note = f"read from the int4 cache in {time.perf_counter() - start:.1f} s"
            log.info("int4: %s (%s)", note, cache.entry(key))
            return _finish(model, folder, note, GenerationConfig)
        if damage is not None:
            note = f"the int4 cache entry could not be used ({damage}); it was rebuilt"
            message = (f"The int4 cache entry {cache.entry(key)} could not be used: {damage}. It was removed; "
                       "quantizing again (one to two minutes at full size)…")
            log.warning("%s", message)
            say(message)
            model = _skeleton(folder, dtype, attn)  # a failed fill may have left it half done
        else:
            stale = cache.stale_for(identity)
            if stale:
                why = describe_difference(stale[-1], parts)
                note = f"the int4 cache held this checkpoint for another setup ({why}); quantized again"
                say(f"The int4 cache holds this checkpoint for another setup ({why}); quantizing again "
                    "(one to two minutes at full size)…")
            else:
                say("Quantizing the weights to int4 (the first start: one to two minutes at full size; later "
                    "starts read them from the cache)…")
    else:
        say("Quantizing the weights to int4 (one to two minutes at full size)…")
    start = time.perf_counter()
    _quantize_from_checkpoint(model, folder, files, weight_map, dtype)
    log.info("int4: quantized %s in %.1f s", folder, time.perf_counter() - start)
    _check_complete(model)
    if cache is not None and key is not None and parts is not None:
        say("Writing the int4 weights to the cache, so that the next start skips quantizing…")
        written = cache.write(key, parts, model.state_dict())
        log.info("%s", written)
        note = "; ".join(filter(None, (note, written.removeprefix("int4 cache: "))))
    return _finish(model, folder, note, GenerationConfig)


def _skeleton(folder: Path, dtype: torch.dtype, attn: str) -> Phi4MultimodalForCausalLM:
    """The model with its parameters on the meta device (buffers are real)."""

    config = AutoConfig.from_pretrained(folder)
    # Without no_init_weights, transformers "initializes" every meta parameter through
    # torch's Python meta kernels: 2.4 s at full size for nothing. The buffers it would
    # set (rotary frequencies) are computed by the constructors already; the persistent
    # ones come from the checkpoint.
    with init_empty_weights(include_buffers=False), no_init_weights():
        return Phi4MultimodalForCausalLM._from_config(config, dtype=dtype, attn_implementation=attn)


def _fill(model: nn.Module, plan: dict[str, dict[str, Any]], tensors: dict[str, torch.Tensor],
          dtype: torch.dtype) -> None:
    """The skeleton's quantized modules and every other tensor, from a cache entry's tensors
    (mapped: nothing is copied)."""

    tensors = dict(tensors)
    for name, p in plan.items():
        if p["kind"] == "int4":
            _replace(model, name, Int4Linear(p["in"], p["out"], tensors.pop(name + ".qweight"),
                                             tensors.pop(name + ".scales_zeros"), p["group"],
                                             tensors.pop(name + ".bias", None)))
        else:
            padding = _embedding(model, name).padding_idx
            _replace(model, name, Int8Embedding(tensors.pop(name + ".qweight"), tensors.pop(name + ".scale"),
                                                padding, dtype))
    for name, tensor in tensors.items():
        set_module_tensor_to_device(model, name, "cpu", value=tensor)
    _check_complete(model)


def _check_complete(model: nn.Module) -> None:
    missing = [n for n, p in model.named_parameters() if p.device.type == "meta"]
    if missing:
        raise ValueError(f"the checkpoint lacks {len(missing)} weights, e.g. {', '.join(missing[:3])}")


def _finish(model: Phi4MultimodalForCausalLM, folder: Path, note: str,
            generation_config: type[GenerationConfig]) -> Phi4MultimodalForCausalLM:
    if (folder / "generation_config.json").is_file():
        model.generation_config = generation_config.from_pretrained(folder)
    # A plain attribute the loader reads; nn.Module's __setattr__ is typed for tensors and modules only.
    model.int4_cache_note = note  # pyright: ignore[reportArgumentType, reportAttributeAccessIssue]
    return model.eval()


def _quantize_from_checkpoint(model: nn.Module, folder: Path, files: list[str], weight_map: dict[str, str] | None,
                              dtype: torch.dtype) -> None:
    """Read the checkpoint tensor by tensor into the skeleton, quantizing each target weight."""

    targets = {name for name, m in model.named_modules() if TARGETS.search(name) and isinstance(m, nn.Linear)}
    biases: dict[str, torch.Tensor] = {}
    weights: dict[str, torch.Tensor] = {}
    # Phi-4's LM head shares the embedding's weights (tie_word_embeddings): the checkpoint
    # then holds no lm_head.weight, and the head is quantized from the embedding.
    names: dict[str, Any] | None = weight_map
    if names is None:
        with open(folder / files[0], "rb") as fh:
            names = _header(fh)
    tied = "lm_head.weight" not in names
    for file in files:
        for key, tensor in read_safetensors(folder / file):
            module, _, param = key.rpartition(".")
            if tensor.is_floating_point():
                tensor = tensor.to(dtype)
            if key == EMBEDDING + ".weight":
                if tied:
                    _replace(model, "lm_head", Int4Linear.from_weight(tensor, None, dtype))
                padding = _embedding(model, EMBEDDING).padding_idx
                _replace(model, EMBEDDING, Int8Embedding.from_weight(tensor, padding, dtype))
                continue
            if module in targets and param in ("weight", "bias"):
                (weights if param == "weight" else biases)[module] = tensor
                if param == "weight" and group_size(tensor.shape[1]) is not None:
                    _replace(model, module, Int4Linear.from_weight(weights.pop(module), None, dtype))
                continue
            set_module_tensor_to_device(model, key, "cpu", value=tensor)
    for module, weight in weights.items():  # an input size no group divides: kept as it is
        set_module_tensor_to_device(model, module + ".weight", "cpu", value=weight)
    for module, bias in biases.items():
        layer = model.get_submodule(module)
        if isinstance(layer, Int4Linear):
            layer.bias = nn.Parameter(bias, requires_grad=False)
        else:
            set_module_tensor_to_device(model, module + ".bias", "cpu", value=bias)


_DTYPES = {"BF16": torch.bfloat16, "F16": torch.float16, "F32": torch.float32, "F64": torch.float64,
           "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
           "BOOL": torch.bool}


def read_safetensors(path: Path) -> Iterator[tuple[str, torch.Tensor]]:
    """(name, tensor) for each tensor of a .safetensors file, each read into memory of its own.

    Not memory-mapped on purpose: pages of a mapped file that were read stay resident (and
    are counted) as long as any tensor of the file is alive, so loading through a mapping
    peaked at the whole bf16 checkpoint plus the int4 model."""
    with open(path, "rb") as fh:
        header = _header(fh)
        base = fh.tell()
        for name, meta in header.items():
            if name == "__metadata__":
                continue
            start, end = meta["data_offsets"]
            buf = bytearray(end - start)
            fh.seek(base + start)
            fh.readinto(buf)
            tensor = torch.frombuffer(buf, dtype=_DTYPES[meta["dtype"]]) if buf else \
                torch.empty(0, dtype=_DTYPES[meta["dtype"]])
            yield name, tensor.reshape(meta["shape"])


def _header(fh: IO[bytes]) -> dict[str, Any]:
    """A .safetensors file's header (tensor names to dtype, shape and offsets); leaves `fh`
    at the first tensor's bytes."""
    return json.loads(fh.read(int.from_bytes(fh.read(8), "little")))


def _embedding(model: nn.Module, name: str) -> nn.Embedding:
    embedding = model.get_submodule(name)
    if not isinstance(embedding, nn.Embedding):
        raise ValueError(f"{name} is a {type(embedding).__name__}, not the token embedding")
    return embedding


def _replace(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, module)
