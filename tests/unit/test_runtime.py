"""Where and how the model runs, decided by one pure function of the settings and the
machine's facts: every combination, no GPU needed."""

import pytest

from phi_demo.engine.runtime import Machine, Runtime, attention_options, resolve
from phi_demo.errors import ModelUnavailable
from phi_demo.settings import AppSettings

CPU = Machine(available_bytes=64e9)
SMALL_CPU = Machine(available_bytes=8e9, model_bf16_bytes=14.8e9)
GPU = Machine(cuda=True, cuda_bf16=True, available_bytes=64e9)
OLD_GPU = Machine(cuda=True, cuda_bf16=False, available_bytes=64e9)
FLASH_GPU = Machine(cuda=True, cuda_bf16=True, flash_attn=True, available_bytes=64e9)
MAC = Machine(mps=True, available_bytes=64e9)
ZEROGPU = Machine(cuda=True, zerogpu=True, on_space=True, available_bytes=64e9)
CPU_SPACE = Machine(on_space=True, available_bytes=64e9)


def run(machine, **settings):
    return resolve(AppSettings(model=settings.pop("model", "some/model"), **settings), machine)


@pytest.mark.parametrize("machine,settings,want", [
    (CPU, {}, ("cpu", "bfloat16", "sdpa", "none")),
    (CPU, {"model": "tiny-random"}, ("cpu", "float32", "sdpa", "none")),
    (SMALL_CPU, {}, ("cpu", "bfloat16", "sdpa", "int4")),
    (SMALL_CPU, {"quantize": "none"}, ("cpu", "bfloat16", "sdpa", "none")),
    (CPU_SPACE, {}, ("cpu", "bfloat16", "sdpa", "int4")),
    (CPU_SPACE, {"model": "tiny-random"}, ("cpu", "float32", "sdpa", "none")),
    (GPU, {}, ("cuda", "bfloat16", "sdpa", "none")),
    (OLD_GPU, {}, ("cuda", "float16", "sdpa", "none")),
    (FLASH_GPU, {}, ("cuda", "bfloat16", "flash_attention_2", "none")),
    (FLASH_GPU, {"attn": "eager", "quantize": "4bit"}, ("cuda", "bfloat16", "eager", "4bit")),
    (ZEROGPU, {}, ("cuda", "bfloat16", "sdpa", "none")),
    (MAC, {}, ("mps", "float16", "sdpa", "none")),
    (MAC, {"model": "tiny-random"}, ("mps", "float32", "sdpa", "none")),
    (GPU, {"device": "cpu"}, ("cpu", "bfloat16", "sdpa", "none")),
    (CPU, {"quantize": "int4", "dtype": "float16"}, ("cpu", "bfloat16", "sdpa", "int4")),
    (CPU, {"dtype": "float32", "attn": "eager"}, ("cpu", "float32", "eager", "none")),
])
def test_each_combination_resolves_with_its_reasons(machine, settings, want):
    runtime = run(machine, **settings)
    assert (runtime.device, runtime.dtype, runtime.attn, runtime.quantize) == want
    assert isinstance(runtime, Runtime) and len(runtime.reasons) >= 4 and all(runtime.reasons)


def test_auto_int4_says_why_and_a_forced_change_is_announced():
    runtime = run(SMALL_CPU)
    assert runtime.quantize_reason == "int4 to fit this machine: bf16 needs 14.8 GB, 8.0 GB is available"
    assert run(CPU_SPACE).quantize_reason.startswith("int4 on this CPU-only Space")
    assert run(CPU, quantize="int4").quantize_reason == ""  # asked for, not chosen
    assert any("instead of float16" in r for r in run(CPU, quantize="int4", dtype="float16").reasons)


@pytest.mark.parametrize("machine,settings,error,words", [
    (CPU, {"device": "cuda"}, ModelUnavailable, "A CUDA device was asked for, but no CUDA GPU is visible. Use --device cpu."),
    (CPU, {"device": "cuda:1"}, ModelUnavailable, "no CUDA GPU is visible"),
    (CPU, {"device": "mps"}, ModelUnavailable, "The mps device (Apple Silicon) was asked for"),
    (CPU, {"device": "tpu"}, ModelUnavailable, "Unknown device 'tpu'; use auto, cpu, cuda, cuda:N or mps."),
    (CPU, {"attn": "flash_attention_2"}, ValueError, "flash_attention_2 cannot be used here: needs a CUDA GPU."),
    (GPU, {"attn": "flash_attention_2"}, ValueError,
     "flash_attention_2 cannot be used here: flash-attn is not installed (pip install flash-attn)."),
    (GPU, {"quantize": "int4"}, ValueError,
     "--quantize int4 is the CPU path; on a GPU use --quantize 4bit (bitsandbytes)."),
    (CPU, {"quantize": "int4", "offload": True}, ValueError, "--quantize int4 is the CPU path"),
])
def test_a_setting_that_cannot_be_honoured_is_refused_in_one_sentence(machine, settings, error, words):
    with pytest.raises(error) as raised:
        run(machine, **settings)
    assert words in str(raised.value) and "\n" not in str(raised.value)


def test_attention_options_say_why_not():
    cpu = {o.name: o for o in attention_options("cpu", CPU)}
    assert cpu["eager"].available and cpu["sdpa"].available and cpu["flash_attention_2"].reason == "needs a CUDA GPU"
    assert {o.name: o for o in attention_options("cuda", FLASH_GPU)}["flash_attention_2"].available


def test_this_machine_is_detected():
    here = Machine.detect("tiny-random")
    assert here.available_bytes is None or here.available_bytes > 0
    assert here.model_bf16_bytes > 0 and not here.zerogpu
