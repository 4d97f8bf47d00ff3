"""Load a Phi-4-multimodal folder: processor, model, attention fix-up and LoRA adapters."""

from __future__ import annotations

import contextlib
import gc
import importlib.util
import logging
import re
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import torch
from peft import LoraConfig, PeftConfig
from peft.tuners.tuners_utils import check_target_module_exists
from safetensors import safe_open
from transformers import (
    AutoProcessor,
    BitsAndBytesConfig,
    Phi4MultimodalForCausalLM,
    Phi4MultimodalProcessor,
    PreTrainedTokenizerBase,
)
from transformers.initialization import no_init_weights
from transformers.models.phi4_multimodal.modeling_phi4_multimodal import Phi4MultimodalVisionAttention
from transformers.utils import logging as hf_logging

from phi_demo import caches
from phi_demo.engine import zerogpu
from phi_demo.engine.fast_decode import FastDecode
from phi_demo.engine.image_cache import CachedImageProcessor
from phi_demo.engine.int4 import check_kernel, load_int4
from phi_demo.engine.int4_cache import Int4Cache
from phi_demo.engine.prefix_cache import PrefixCache
from phi_demo.engine.worker import GenerationWorker
from phi_demo.errors import HOW_TO_FIX, ModelUnavailable

ADAPTERS = {"vision": "vision-lora", "speech": "speech-lora"}
log = logging.getLogger(__name__)


def fix_vision_attention(model: torch.nn.Module) -> int:
    """SigLIP attends both ways, but the vision attention modules declare is_causal=True:
    sdpa/flash then mask the future for crops without padding. Returns how many were fixed."""
    n = 0
    for module in model.modules():
        if isinstance(module, Phi4MultimodalVisionAttention) and module.is_causal:
            module.is_causal = False
            n += 1
    return n


class _NoPooling(torch.nn.Module):
    """Stands in for the vision tower's attention-pooling head, whose output Phi-4 never uses."""

    def forward(self, hidden_state: torch.Tensor, attention_mask: torch.Tensor | None = None) -> None:
        return None


def skip_vision_pooling(model: torch.nn.Module) -> bool:
    """Phi-4 takes its image features from the vision tower's hidden states; the SigLIP
    pooling head's output is computed and thrown away. On the CPU in bf16 that head
    (torch's MultiheadAttention with a padding mask) took 4-5 s and 5.4 GB per image at full
    size, more than the rest of the vision tower. Returns whether it was there to remove."""
    vision = getattr(getattr(getattr(model, "model", None), "embed_tokens_extend", None), "image_embed", None)
    tower = getattr(vision, "img_processor", None)
    if tower is None or not hasattr(tower, "head") or isinstance(tower.head, _NoPooling):
        return False
    tower.head = _NoPooling()
    return True


# The tokens that end an answer whatever the checkpoint's generation config says: Phi-4 ends
# its turn with <|end|>, and <|endoftext|> ends a document.
END_TOKENS = ("<|end|>", "<|endoftext|>")


def stop_token_ids(model: object, tokenizer: PreTrainedTokenizerBase | None) -> list[int]:
    """Every id that ends an answer: the checkpoint's own eos (generation config, then model
    config) plus END_TOKENS where the tokenizer has them.

    A converted checkpoint's generation_config.json may name only <|endoftext|> (199999), as
    `save_pretrained` derives it from config.json; the model ends each turn with <|end|>
    (200020), so relying on the file alone would run every answer on into made-up turns."""
    ids: list[int] = []

    def add(value: object) -> None:
        for v in value if isinstance(value, (list, tuple)) else [value]:
            if isinstance(v, int) and v >= 0 and v not in ids:
                ids.append(v)

    add(getattr(getattr(model, "generation_config", None), "eos_token_id", None))
    add(getattr(getattr(model, "config", None), "eos_token_id", None))
    unknown = getattr(tokenizer, "unk_token_id", None)
    vocab: dict[str, int] = tokenizer.get_vocab() if tokenizer is not None else {}
    for token in END_TOKENS:
        if token in vocab and vocab[token] != unknown:
            add(vocab[token])
    return ids


@dataclass
class LoadedModel:
    """The model and what belongs to its life: processor, adapters, KV-reuse store, the worker
    thread that generates, fast decode's compiled step. `release()` frees all of it."""

    model: Phi4MultimodalForCausalLM
    processor: Phi4MultimodalProcessor
    folder: Path
    device: str
    dtype: str
    attn: str
    load_seconds: float
    adapters: list[str] = field(default_factory=list)
    prefix_cache: PrefixCache = field(default_factory=PrefixCache)
    worker: GenerationWorker = field(default_factory=GenerationWorker)
    fast: FastDecode | None = None  # once --fast-decode has compiled
    fast_error: str | None = None  # why fast decode could not be used
    int4_cache_note: str = ""  # what the int4 cache did at load (read, written, rebuilt)
    _stop_ids: list[int] | None = field(default=None, repr=False)
    _released: bool = field(default=False, repr=False)

    @property
    def stop_ids(self) -> list[int]:
        """The ids that end an answer (stop_token_ids), worked out once."""
        if self._stop_ids is None:
            self._stop_ids = stop_token_ids(self.model, self.processor.tokenizer)
        return self._stop_ids

    @property
    def memory_bytes(self) -> int:
        m = self.model
        total = sum(p.numel() * p.element_size() for p in m.parameters())
        return total + sum(b.numel() * b.element_size() for b in m.buffers())

    def set_attention(self, attn: str) -> None:
        """Switch attention in place (no reload)."""
        self.model.set_attn_implementation(attn)
        fix_vision_attention(self.model)
        self.attn = attn
        self.drop_compiled()

    def drop_compiled(self) -> None:
        """Forget fast decode's graphs and static caches (they were made for the old state)."""
        if self.fast is not None:
            self.fast = None
            self.prefix_cache.clear()  # its entries may hold the static caches
            if not self._released and hasattr(self.model, "_compiled_call"):
                del self.model._compiled_call
            torch._dynamo.reset()

    def release(self) -> None:
        """Free the model and everything tied to it, the process-wide caches of its work included."""
        self.prefix_cache.clear()
        self.worker.stop()
        self.drop_compiled()
        caches.clear_all(model_tied_only=True)
        # Callers may still hold this object (a reader that has not noticed): dropping the
        # references here is what lets the memory go.
        self._released = True
        del self.model, self.processor
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


ADAPTER_FILE = "adapter_model.safetensors"
# peft's key for a LoRA weight: <module>.lora_A.weight, lora_B, lora_embedding_A/B, DoRA's
# lora_magnitude_vector; the file prefixes the model's own names with base_model.model.
_LORA_KEY = re.compile(r"^(?:base_model\.model\.)?(?P<module>.+?)\.lora_[A-Za-z_]+(?:\.[^.]+)?$")


def adapter_modules(path: Path) -> set[str]:
    """The modules an adapter file holds LoRA weights for (read from its header, no tensors)."""

    with safe_open(str(path), framework="pt") as f:
        keys = list(f.keys())
    return {m.group("module") for k in keys if (m := _LORA_KEY.match(k))}


def adapter_config(folder: Path, name: str, model: torch.nn.Module) -> PeftConfig:
    """The adapter's config, with LoRA only where its file has weights.

    The hub's adapter configs name target modules by their last part (qkv_proj, o_proj, ...),
    which also matches the audio encoder's o_proj/gate_up_proj/down_proj; the files hold
    weights for the decoder only, as the original model code applied them. Taken literally,
    the names would add about 0.4 GB of zero-effect LoRA layers (and their work) to the audio
    encoder at full size. So the targets become exactly the modules the file has weights for."""

    config = PeftConfig.from_pretrained(str(folder))
    weights = folder / ADAPTER_FILE
    if not isinstance(config, LoraConfig) or not weights.is_file():
        return config  # a .bin adapter (or not LoRA): peft's own matching, as written
    present = adapter_modules(weights)
    named = [n for n, _ in model.named_modules() if check_target_module_exists(config, n)]
    skipped = [n for n in named if n not in present]
    if skipped:
        extra = sum(_lora_bytes(model.get_submodule(n), config.r) for n in skipped)
        log.info("%s adapter: its config also names %d modules its file has no weights for (e.g. %s); no LoRA "
                 "added there (%.2f GB saved)", name, len(skipped), skipped[0], extra / 1e9)
    config.target_modules = sorted(present)
    return config


def _lora_bytes(module: torch.nn.Module, rank: int) -> int:
    """Bytes of a rank-`rank` LoRA pair on a linear layer (0 for anything else)."""
    w = getattr(module, "weight", None)
    if w is None or w.dim() != 2:
        return 0
    return rank * (w.shape[0] + w.shape[1]) * w.element_size()


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    before = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        with warnings.catch_warnings():
            # peft warns that a second adapter joins the first: that is the point here.
            warnings.filterwarnings("ignore", message="Already found a `peft_config`")
            yield
    finally:
        hf_logging.set_verbosity(before)


def load_processor(folder: Path) -> Phi4MultimodalProcessor:
    processor = AutoProcessor.from_pretrained(folder)
    if not isinstance(processor, Phi4MultimodalProcessor):
        raise ValueError(f"{folder} holds a {type(processor).__name__}, not Phi-4-multimodal's processor")
    if CachedImageProcessor.applies_to(getattr(processor, "image_processor", None)):
        processor.image_processor = CachedImageProcessor(processor.image_processor)
    # Reloading from a folder drops the processor's chat template; the tokenizer keeps it.
    if getattr(processor, "chat_template", None) is None and getattr(processor.tokenizer, "chat_template", None):
        processor.chat_template = processor.tokenizer.chat_template
    return processor


# Quantizing the vision and audio encoders (and the LM head) breaks them ("Cannot convert
# tensor ... Int2" in the seed project); only the decoder's linear layers are quantized.
KEEP_UNQUANTIZED = ["model.embed_tokens_extend", "lm_head"]  # matched from the start of the name


def quantization_config(kind: str, dtype: str) -> BitsAndBytesConfig | None:
    """bitsandbytes settings for --quantize, or None."""
    if kind in (None, "", "none"):
        return None

    if kind == "4bit":
        return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                  bnb_4bit_compute_dtype=getattr(torch, dtype), llm_int8_skip_modules=KEEP_UNQUANTIZED)
    if kind == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=KEEP_UNQUANTIZED)
    raise ModelUnavailable(f"Unknown quantization {kind!r}; choose int4 (CPU), 4bit or 8bit (bitsandbytes, GPU).")


def load_model(folder: Path, device: str, dtype: str, attn: str, quantize: str = "none",
               offload: bool = False, int4_cache: Int4Cache | None = None,
               progress: Callable[[str], None] | None = None) -> LoadedModel:
    """The model in `folder` as runtime.resolve decided (int4 only on the CPU, without --offload)."""
    start = time.perf_counter()
    int4 = quantize == "int4"
    quant = None if int4 else quantization_config(quantize, dtype)
    if quant is not None and importlib.util.find_spec("bitsandbytes") is None:
        raise ModelUnavailable("--quantize needs bitsandbytes: pip install bitsandbytes.")
    if int4:
        problem = check_kernel()
        if problem:
            raise ModelUnavailable(f"--quantize int4 cannot run here: {problem}. Use --quantize none.")
    try:
        processor = load_processor(folder)
        # Under ZeroGPU, CUDA is emulated until a request runs: load on the CPU, then .to()
        # records the move, as ZeroGPU asks. --offload lets accelerate place layers on the
        # GPU until it is full and the rest in CPU memory.
        load_on = "cpu" if zerogpu.enabled() else ("auto" if offload else device)
        if int4:
            model = load_int4(folder, getattr(torch, dtype), attn, int4_cache, progress)
        else:
            model = Phi4MultimodalForCausalLM.from_pretrained(
                folder, dtype=getattr(torch, dtype), attn_implementation=attn, device_map=load_on,
                quantization_config=quant,
            ).eval()

    except torch.OutOfMemoryError as e:
        raise ModelUnavailable(f"Not enough GPU memory to load the model in {dtype}: {e}. Try --device cpu.") from e
    except (OSError, ValueError, RuntimeError, KeyError) as e:
        raise ModelUnavailable(f"The model in {folder} could not be loaded: {str(e).splitlines()[0][:300]}. {HOW_TO_FIX}") from e
    fix_vision_attention(model)
    skip_vision_pooling(model)
    adapters: list[str] = []
    for name, sub in ADAPTERS.items():
        if (Path(folder) / sub / "adapter_config.json").is_file():
            config = adapter_config(Path(folder) / sub, name, model)
            # load_adapter reports every base weight as "MISSING" from the adapter file,
            # which reads like a broken load; the adapter itself loads fully.
            # The file overwrites every LoRA weight: initialising them first (randomly, as peft
            # does) only cost about 5 s per adapter at full size.
            with _quiet_transformers(), no_init_weights():
                # transformers types peft_config as a dict but takes (and uses) a PeftConfig.
                info = model.load_adapter(str(Path(folder) / sub), adapter_name=name,
                                          peft_config=config)  # pyright: ignore[reportArgumentType]
            missing = [k for k in getattr(info, "missing_keys", ()) or () if "lora_" in k and f".{name}." in k]
            if missing:
                raise ModelUnavailable(f"The {name} adapter in {folder / sub} lacks weights it declares "
                                       f"(e.g. {missing[0]}); it may be damaged. {HOW_TO_FIX}")
            adapters.append(name)
    if load_on == "cpu" and device != "cpu":
        # After the adapters: their loader copies tensors in threads ZeroGPU does not see. (The
        # checker misreads transformers' decorated `to`.)
        model.to(device)  # pyright: ignore[reportArgumentType]
    model.eval()
    return LoadedModel(model, processor, Path(folder), device, dtype, attn, time.perf_counter() - start, adapters,
                       int4_cache_note=getattr(model, "int4_cache_note", ""))
