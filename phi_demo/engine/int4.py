"""Weight-only int4 for the CPU (`--quantize int4`): the decoder's linear layers and the LM
head, group-wise (128 weights per scale and zero point), over torch's own kernel
`aten._weight_int4pack_mm_for_cpu`.

Why not a library: torchao 0.18's stable Int4WeightOnlyConfig needs a CUDA-only kernel
package here, its CPU int4 tensor is a prototype, and peft's LoRA layers accept torchao
weights only in int8; bitsandbytes' 4-bit runs ~5x slower than bf16 on the CPU. The module
below is a plain nn.Linear subclass, so peft wraps it with the vision and speech LoRA like
any other layer.

torch's kernel is ~3x faster than bf16 for one row (a decode step) but ~12x slower for a
thousand (a prefill), so past PREFILL_ROWS rows the layer dequantizes its weights to the
compute dtype into a buffer shared by all layers of that shape and uses the ordinary matmul.
The dequantization is one numba loop (numba comes with librosa): torch's own ops needed four
passes over the weight (nibbles, scale, transpose) and cost ~3 s per prompt at full size.

Loading reads the checkpoint tensor by tensor and quantizes each target weight as it
arrives, so the bf16 model never sits in memory whole."""

from __future__ import annotations

import json
import re
import threading
from pathlib import Path

import numba
import numpy as np
import torch
from torch import nn

# Decode steps (and short prompts) use the kernel; longer inputs dequantize (measured on
# 2 cores: the kernel costs ~1.25 ms per row on a 3072x16384 weight, dequantizing ~40 ms).
PREFILL_ROWS = 32
# The kernel's packed layout puts 64 output rows in a block (two nibbles of 32 rows each).
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


_scratch: dict = {}
_scratch_lock = threading.Lock()


def _buffer(shape: tuple, dtype: torch.dtype) -> torch.Tensor:
    """One dequantization buffer per weight shape, shared by all layers: they run one after another."""
    key = (threading.get_ident(), shape, dtype)
    with _scratch_lock:
        buf = _scratch.get(key)
        if buf is None:
            buf = _scratch[key] = torch.empty(shape, dtype=dtype)
        return buf


class Int4Linear(nn.Linear):
    def __init__(self, in_features: int, out_features: int, packed: torch.Tensor, scales_zeros: torch.Tensor,
                 group: int, bias: torch.Tensor | None = None):
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
        packed, scales_zeros = quantize_weight(weight, group, dtype)
        return cls(in_features, out_features, packed, scales_zeros, group, bias)

    @property
    def padded_out(self) -> int:
        return self.qweight.shape[0]

    def dequantized_t(self) -> torch.Tensor:
        """The weight, transposed ([in, out padded]), in the compute dtype, in a shared buffer."""
        k, n, dtype = self.in_features, self.padded_out, self.compute_dtype
        wt = _buffer((k, n), dtype)
        packed = self.qweight.view(n // BLOCK_N, k, BLOCK_N // 2).numpy()
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
            y = x2 @ self.dequantized_t()
        if self.padded_out != self.out_features:
            y = y[:, : self.out_features]
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(*shape[:-1], self.out_features).to(x.dtype)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int4 group {self.group}"


_numba_lock = threading.Lock()


@numba.njit(fastmath=True, cache=True, inline="always")
def _dequantize_row(packed, scale, zero, g, kk, row):  # pragma: no cover - compiled by numba
    """row[n] = w.T[kk] from the kernel's layout: packed[n / 64, k, 32] holds output rows
    b*64 + r in the low nibble and b*64 + 32 + r in the high one; w = (q - 8) * scale + zero,
    with scale and zero [k / group, n]."""
    blocks, _, half = packed.shape
    for b in range(blocks):
        c = b * 2 * half
        for r in range(half):
            byte = packed[b, kk, r]
            row[c + r] = np.float32((byte & 15) - 8) * scale[g, c + r] + zero[g, c + r]
            row[c + half + r] = np.float32((byte >> 4) - 8) * scale[g, c + half + r] + zero[g, c + half + r]


@numba.njit(parallel=True, fastmath=True, cache=True)
def _dequantize_f32(packed, scale, zero, group, out):  # pragma: no cover - compiled by numba
    for kk in numba.prange(packed.shape[1]):
        _dequantize_row(packed, scale, zero, kk // group, kk, out[kk])


@numba.njit(parallel=True, fastmath=True, cache=True)
def _dequantize_bf16(packed, scale, zero, group, out):  # pragma: no cover - compiled by numba
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

    def __init__(self, qweight: torch.Tensor, scale: torch.Tensor, padding_idx: int | None, dtype: torch.dtype):
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


def quantized_modules(model) -> list[str]:
    return [name for name, m in model.named_modules() if isinstance(m, (Int4Linear, Int8Embedding))]


def load_int4(folder: Path, dtype: torch.dtype, attn: str):
    """Phi4MultimodalForCausalLM from `folder` with its decoder linears and LM head in int4,
    quantized one tensor at a time as the checkpoint is read."""
    from accelerate import init_empty_weights
    from accelerate.utils import set_module_tensor_to_device
    from transformers import AutoConfig, GenerationConfig, Phi4MultimodalForCausalLM

    folder = Path(folder)
    config = AutoConfig.from_pretrained(folder)
    with init_empty_weights(include_buffers=False):
        model = Phi4MultimodalForCausalLM._from_config(config, dtype=dtype, attn_implementation=attn)
    targets = {name for name, m in model.named_modules() if TARGETS.search(name) and isinstance(m, nn.Linear)}
    index = folder / "model.safetensors.index.json"
    weight_map = json.loads(index.read_text())["weight_map"] if index.is_file() else None
    files = sorted(set(weight_map.values())) if weight_map else ["model.safetensors"]
    biases: dict[str, torch.Tensor] = {}
    weights: dict[str, torch.Tensor] = {}
    # Phi-4's LM head shares the embedding's weights (tie_word_embeddings): the checkpoint
    # then holds no lm_head.weight, and the head is quantized from the embedding.
    names = weight_map
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
                embedding = model.get_submodule(EMBEDDING)
                _replace(model, EMBEDDING, Int8Embedding.from_weight(tensor, embedding.padding_idx, dtype))
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
    missing = [n for n, p in model.named_parameters() if p.device.type == "meta"]
    if missing:
        raise ValueError(f"the checkpoint lacks {len(missing)} weights, e.g. {', '.join(missing[:3])}")
    if (folder / "generation_config.json").is_file():
        model.generation_config = GenerationConfig.from_pretrained(folder)
    return model.eval()


_DTYPES = {"BF16": torch.bfloat16, "F16": torch.float16, "F32": torch.float32, "F64": torch.float64,
           "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
           "BOOL": torch.bool}


def read_safetensors(path: Path):
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


def _header(fh) -> dict:
    """A .safetensors file's header (tensor names to dtype, shape and offsets); leaves `fh`
    at the first tensor's bytes."""
    return json.loads(fh.read(int.from_bytes(fh.read(8), "little")))


def _replace(model, name: str, module: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, module)
