"""The house rules, checked: the UI never imports torch; the engine never imports gradio."""

import subprocess
import sys

from tests.helpers import ROOT


def _modules_after(imports: str) -> set[str]:
    code = f"import sys; {imports}; print(' '.join(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    return set(out.stdout.split())


def test_ui_and_pure_layers_do_not_import_torch():
    mods = _modules_after("import phi_demo.ui, phi_demo.chat, phi_demo.conversation, phi_demo.media, phi_demo.settings")
    assert "gradio" in mods
    assert "torch" not in mods and "transformers" not in mods


def test_engine_does_not_import_gradio():
    mods = _modules_after("import phi_demo.engine")
    assert "torch" in mods
    assert "gradio" not in mods


def test_conversation_imports_neither_model_nor_gradio():
    mods = _modules_after("import phi_demo.conversation")
    assert not {"torch", "transformers", "gradio"} & mods


def test_contract_is_torch_free():
    mods = _modules_after("import phi_demo.contract, phi_demo.stats, phi_demo.lru, phi_demo.transcription")
    assert not {"torch", "transformers", "gradio"} & mods


def test_no_import_circle_between_loader_sources_and_tiny():
    """loader -> errors; sources -> tiny (to build it); tiny -> neither; the full-size random
    build lives with the benchmark."""
    import ast

    def imports(path):
        tree = ast.parse((ROOT / path).read_text())
        return {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}

    assert not {".sources", ".tiny"} & imports("phi_demo/engine/loader.py")
    assert not {".loader", ".sources"} & imports("phi_demo/engine/tiny.py")
    assert ".loader" not in imports("phi_demo/engine/sources.py")
