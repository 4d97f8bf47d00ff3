"""The hub download fetches what the app uses: the shards the index names, the small files and
the adapters, never a branch's leftover shards or sample media."""

import json

import pytest

from phi_demo.engine import sources

# A branch as refs/pr/70 may be: the native shards (named by the index) beside main's older
# ones, remote code, examples and the report.
REPO = {
    "config.json": "{}",
    "generation_config.json": "{}",
    "model.safetensors.index.json": json.dumps({"weight_map": {
        "model.embed_tokens.weight": "model-00001-of-00002.safetensors",
        "lm_head.weight": "model-00002-of-00002.safetensors",
    }}),
    "model-00001-of-00002.safetensors": "new shard 1",
    "model-00002-of-00002.safetensors": "new shard 2",
    "model-00001-of-00003.safetensors": "old shard 1",
    "model-00002-of-00003.safetensors": "old shard 2",
    "model-00003-of-00003.safetensors": "old shard 3",
    "preprocessor_config.json": "{}",
    "processor_config.json": "{}",
    "tokenizer.json": "{}",
    "tokenizer_config.json": "{}",
    "special_tokens_map.json": "{}",
    "added_tokens.json": "{}",
    "vocab.json": "{}",
    "merges.txt": "",
    "chat_template.jinja": "",
    "vision-lora/adapter_config.json": "{}",
    "vision-lora/adapter_model.safetensors": "v",
    "speech-lora/adapter_config.json": "{}",
    "speech-lora/adapter_model.safetensors": "s",
    "modeling_phi4mm.py": "",
    "examples/what_is_shown_in_this_image.wav": "",
    "phi_4_mm.tech_report.02252025.pdf": "",
    "figures/audio_understand.png": "",
    "pytorch_model.bin": "",
}
NEEDED = {name for name in REPO if not name.startswith(("model-0000", "modeling", "examples", "figures", "phi_4",
                                                         "pytorch"))}
NEEDED |= {"model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"}


@pytest.fixture
def fake_hub(tmp_path, monkeypatch):
    """snapshot_download over REPO with huggingface_hub's own pattern filter."""
    from huggingface_hub.utils import filter_repo_objects

    snapshot = tmp_path / "snapshot"
    fetched: list[str] = []

    def snapshot_download(repo_id, revision=None, allow_patterns=None, ignore_patterns=None, **kwargs):
        for name in filter_repo_objects(REPO, allow_patterns=allow_patterns, ignore_patterns=ignore_patterns):
            path = snapshot / name
            if not path.exists():
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(REPO[name])
                fetched.append(name)
        return str(snapshot)

    monkeypatch.setattr(sources, "snapshot_download", snapshot_download)
    return fetched


def test_only_the_indexed_shards_and_the_files_the_app_reads_are_fetched(fake_hub):
    folder = sources.resolve("microsoft/Phi-4-multimodal-instruct", "refs/pr/70")
    assert set(fake_hub) == NEEDED, sorted(set(fake_hub) ^ NEEDED)
    assert len(fake_hub) == len(set(fake_hub))  # nothing twice
    assert (folder / "model-00002-of-00002.safetensors").is_file()


def test_a_checkpoint_without_an_index_fetches_its_single_file(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    assert sources.weight_files(tmp_path) == ["model.safetensors"]
