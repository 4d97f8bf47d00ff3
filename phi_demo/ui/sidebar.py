"""The sidebar's model and generation sections: what the model is (its typed facts), the
shared attention setting and how tabs hear of its changes, the request settings and their
reset. Gradio only; the engine is used through the ChatEngine contract."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import gradio as gr
from gradio.components import Component

from phi_demo.chat.turn import REQUEST_SETTINGS
from phi_demo.contract import ChatEngine, EngineStatus, ModelFacts
from phi_demo.settings import AppSettings, GenerationSettings

# (attention, how many switches the engine had made) as this tab last showed it.
Seen = tuple[str, int]
# What the attention handlers return: the radio, the model facts, what this tab has seen.
AttentionView = tuple[Any, Any, Any]
KEEP_RECORDS = 32  # who made the last switches; older ones no tab still waits to hear of


def facts_markdown(facts: ModelFacts) -> str:
    if facts.server:
        rows = [("Backend", "OpenAI-compatible server"), ("Server", facts.server), ("Model", facts.model),
                ("Served models", ", ".join(facts.served_models) or "none listed"), ("Attention", facts.attention)]
        return "\n".join(f"- **{k}:** `{v}`" for k, v in rows)
    rows = [("Model", facts.model), ("Revision", facts.revision), ("Device", facts.device), ("dtype", facts.dtype),
            ("Attention", facts.attention), ("Adapters", ", ".join(facts.adapters) or "none"),
            ("Load time", f"{facts.load_seconds} s"), ("Weights", f"{facts.weights_gb} GB"),
            ("Quantized", facts.quantized), ("Placement", facts.placement), ("Fast decode", facts.fast_decode),
            ("GPU memory in use", None if facts.cuda_allocated_gb is None else f"{facts.cuda_allocated_gb} GB"),
            ("Context budget", None if facts.context_budget is None else f"{facts.context_budget:,} prompt tokens")]
    return "\n".join(f"- **{k}:** `{v}`" for k, v in rows if v is not None)


def _tab(request: gr.Request | None) -> str | None:
    """The tab an event comes from; None when unknown (a direct call), which owns no switch."""
    return request.session_hash if request is not None else None


class SidebarHandlers:
    def __init__(self, engine: ChatEngine, settings: AppSettings):
        self.engine = engine
        self.settings = settings
        # Which tab made each attention switch, and which tabs are waiting for one to apply:
        # a tab is told of the others' switches only.
        self._lock = threading.Lock()
        self._made_by: dict[int, str | None] = {}
        self._changing: dict[str | None, int] = {}

    # --- the model ---------------------------------------------------------------
    def status_markdown(self, status: EngineStatus | None = None) -> str:
        st = status or self.engine.status()
        if st.state == "error":
            return f"❌ **Model unavailable.** {st.message}"
        if st.state in ("loading", "idle") or st.facts is None:
            return f"⏳ {st.message or 'Loading…'}"
        return facts_markdown(st.facts)

    def banner_markdown(self, status: EngineStatus | None = None) -> str:
        st = status or self.engine.status()
        if st.state == "error":
            return f"### ❌ The model is unavailable\n{st.message}"
        engine = self.engine
        if engine.on_space and engine.device == "cpu" and not engine.is_tiny:
            weights = ("It runs with int4 weights here: about 5 tokens a second on 2 CPU cores, and an image "
                       "takes 15-20 s to read. " if engine.quantize == "int4" else
                       "In bf16 on a CPU it answers at about 2 tokens a second, and an image takes 10-40 s. ")
            return ("### 🐢 This Space has no GPU\n" + weights + "For fast answers, pick GPU hardware; to try "
                    "only the interface, set `PHI_DEMO_MODEL=tiny-random` in the Space's settings "
                    "(or run `python app.py --model tiny-random`).")
        if engine.is_tiny:
            return ("### ⚠️ Tiny random model\nThis is a tiny model with **random weights**: its answers are "
                    "random noise. It exists so you can try the interface without a GPU or a download.")
        return ""

    async def follow_model(self) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        """From the page's load until the model is ready or has failed: the facts and the
        banner, sent again whenever the load's progress message changes. The engine has no
        change notice, so this looks once a second, on the server and without holding a
        thread, instead of every page asking."""
        shown = None
        while True:
            status = self.engine.status()
            view = self.status_markdown(status), self.banner_markdown(status)
            if view != shown:
                shown = view
                yield view[0], gr.update(value=view[1], visible=bool(view[1]))
            if status.state not in ("loading", "idle"):
                return
            await asyncio.sleep(1.0)

    # --- attention: one setting of the shared model ------------------------------------
    def attention_info(self) -> str:
        options = self.engine.attention_options()
        if not options:
            return "Decided by the model server."
        off = [f"{o.name}: {o.reason}" for o in options if not o.available]
        return "Unavailable here — " + "; ".join(off) if off else "All implementations can run here."

    def _seen(self) -> Seen:
        return self.engine.attn, self.engine.attn_changes

    def change_attention(self, choice: str, request: gr.Request | None = None) -> AttentionView:
        """The attention radio: switch the shared model for everyone once the running answer
        ends. The radio is left as the person set it (a later click may be waiting to
        apply); it goes back only when the choice cannot run here."""
        tab = _tab(request)
        with self._lock:
            self._changing[tab] = self._changing.get(tab, 0) + 1
        try:
            if choice == self.engine.attn:
                return gr.skip(), gr.skip(), self._seen()
            try:
                self.engine.set_attention(choice)
            except ValueError as e:
                gr.Warning(str(e))
                return self.engine.attn, self.status_markdown(), self._seen()
            seen = self._seen()
            with self._lock:
                self._made_by[seen[1]] = tab
                for old in sorted(self._made_by)[:-KEEP_RECORDS]:
                    del self._made_by[old]
            gr.Info(f"Attention is now {seen[0]}, for every user of this app.")
            return gr.skip(), self.status_markdown(), seen
        finally:
            with self._lock:
                self._changing[tab] -= 1
                if not self._changing[tab]:
                    del self._changing[tab]

    def sync_attention(self, shown: str | None, seen: Seen | list[Any] | None,
                       request: gr.Request | None = None) -> AttentionView:
        """Another tab switched the shared attention: show it here and say so, once. This
        tab's own switches, applied or still waiting, are not news."""
        now = self._seen()  # before asking whose it is: a switch made after this is the next look's
        tab = _tab(request)
        if seen is None:
            return gr.skip(), gr.skip(), now  # the page just opened
        if tuple(seen) == now:
            return gr.skip(), gr.skip(), gr.skip()
        with self._lock:
            own = tab is not None and (tab in self._changing or self._made_by.get(now[1]) == tab)
        if own or shown == now[0]:
            return gr.skip(), gr.skip(), now
        gr.Info(f"Another user switched the attention implementation to {now[0]}; it applies to everyone.")
        return now[0], self.status_markdown(), now

    # --- the request settings ----------------------------------------------------------
    def defaults(self) -> dict[str, Any]:
        """The settings' defaults by name (system prompt and generation; -1 = random seed)."""
        d = GenerationSettings(max_new_tokens=self.settings.max_new_tokens).as_dict()
        values: dict[str, Any] = {name: d.get(name) for name in REQUEST_SETTINGS if name != "system_prompt"}
        values["seed"] = -1
        return {"system_prompt": self.settings.system_prompt, **values}


@dataclass
class Sidebar:
    """The sidebar's model and generation components, for the page's wiring."""

    model: gr.Markdown
    attention: gr.Radio
    seen_attention: gr.State
    named: dict[str, Component]  # the request settings by name (REQUEST_SETTINGS)
    reset: gr.Button


def build_sidebar(h: SidebarHandlers) -> Sidebar:
    """The model and generation sections; call inside the gr.Sidebar."""
    d = GenerationSettings(max_new_tokens=h.settings.max_new_tokens)
    limits = GenerationSettings.LIMITS
    gr.Markdown("### Model")
    model = gr.Markdown(h.status_markdown(), elem_id="model-status")
    options = [o.name for o in h.engine.attention_options()]
    # A remote server decides its own attention: shown, not editable.
    attention = gr.Radio(options or [h.engine.attn], value=h.engine.attn, interactive=bool(options),
                         label="Attention implementation", info=h.attention_info(), elem_id="attn")
    seen_attention = gr.State(None)
    gr.Markdown("### Generation")
    named: dict[str, Component] = {
        "max_new_tokens": gr.Slider(*limits["max_new_tokens"], value=d.max_new_tokens, step=1, label="Max new tokens",
                                    elem_id="max-new-tokens"),
        "do_sample": gr.Checkbox(value=d.do_sample, label="Sampling (off = greedy)", elem_id="do-sample"),
        "temperature": gr.Slider(*limits["temperature"], value=d.temperature, step=0.01, label="Temperature"),
        "top_p": gr.Slider(*limits["top_p"], value=d.top_p, step=0.01, label="Top-p"),
        "top_k": gr.Slider(*limits["top_k"], value=d.top_k, step=1, label="Top-k"),
        "repetition_penalty": gr.Slider(*limits["repetition_penalty"], value=d.repetition_penalty, step=0.01,
                                        label="Repetition penalty"),
        "seed": gr.Number(value=-1, precision=0, label="Seed (-1 = random)", elem_id="seed"),
        "system_prompt": gr.Textbox(h.settings.system_prompt, lines=3, label="System prompt", elem_id="system-prompt"),
    }
    assert set(named) == set(REQUEST_SETTINGS), "the sidebar must offer every request setting"
    reset = gr.Button("Reset to defaults", elem_id="reset")
    return Sidebar(model, attention, seen_attention, named, reset)


def wire_sidebar(demo: gr.Blocks, h: SidebarHandlers, sb: Sidebar, banner: gr.Markdown) -> None:
    demo.load(h.follow_model, None, [sb.model, banner], concurrency_limit=None, show_progress="hidden",
              api_visibility="private")
    # The person's last choice wins: a click while an earlier one waits for the running
    # answer is applied after it (always_last), reading the radio as it is then. `input`,
    # not `change`: the radio moved by another tab's switch is not a choice of this one.
    sb.attention.input(h.change_attention, [sb.attention], [sb.attention, sb.model, sb.seen_attention],
                       trigger_mode="always_last", concurrency_id="attention", api_visibility="private")
    demo.load(h.sync_attention, [sb.attention, sb.seen_attention], [sb.attention, sb.model, sb.seen_attention],
              api_visibility="private")
    # A timer, because nothing else can tell this page that another user switched the shared
    # model's attention: no event of this tab happens then. Only where there is a choice.
    others = gr.Timer(2.0, active=sb.attention.interactive is not False)
    others.tick(h.sync_attention, [sb.attention, sb.seen_attention], [sb.attention, sb.model, sb.seen_attention],
                show_progress="hidden", api_visibility="private")
    defaults = h.defaults()
    sb.reset.click(lambda: [defaults[name] for name in sb.named], None, list(sb.named.values()),
                   api_visibility="private")
