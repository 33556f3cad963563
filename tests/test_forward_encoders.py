"""Text encoders through the forward pass: tiny random BERT, T5, UMT5, CLIP-L/G, Qwen2.5-VL (text),
Mistral and Gemma 3 models built with transformers' classes, saved under the key names ComfyUI's
text-encoder files use, FP8.

Each is calibrated from the CLI with the default `--method auto`: every FP8 linear must get its
scale from the forward pass (none from a bound or a guess) and be reported as run weight-only
by ComfyUI; the streaming pass must see exactly what an eager run of the dequantized model sees.
"""

from __future__ import annotations

import json
from pathlib import Path

import diffusers  # noqa: F401 (the test extra installs it: a broken install fails here, it does not skip)
import pytest
import torch
import transformers  # noqa: E402
from safetensors.torch import save_file

from conftest import run_cli  # noqa: E402
from fp8stream.families import by_name  # noqa: E402
from fp8stream.families.samples import SamplePlan  # noqa: E402
from fp8stream.harness.checkpoint import write_fp8_checkpoint  # noqa: E402
from fp8stream.harness.fp8 import quantize_weight  # noqa: E402
from fp8stream.io.reader import LazyFile  # noqa: E402
from fp8stream.io.source import TensorSource  # noqa: E402
from fp8stream.methods.forward.forward_pass import PassSettings, prepare, run  # noqa: E402

SMALL = PassSettings(batch=3, text_tokens=12, threads=1)
ARGS = ["--forward-batch", "3", "--forward-text-tokens", "12", "--forward-threads", "1", "--json", "--no-progress"]


def _bert():
    # widths whose head count the shapes-only config gets right (128: 2 heads, as the small BERTs)
    cfg = transformers.BertConfig(vocab_size=120, hidden_size=128, num_hidden_layers=2, num_attention_heads=2,
                                  intermediate_size=64, max_position_embeddings=40, type_vocab_size=2)
    return transformers.BertModel(cfg, add_pooling_layer=False), "bert"


def _t5(umt5: bool):
    kw = dict(vocab_size=90, d_model=32, d_kv=8, d_ff=48, num_layers=2, num_heads=4, feed_forward_proj="gated-gelu")
    if umt5:
        return transformers.UMT5EncoderModel(transformers.UMT5Config(**kw)), "t5"
    return transformers.T5EncoderModel(transformers.T5Config(**kw)), "t5"


def _clip(projection: bool):
    cfg = transformers.CLIPTextConfig(vocab_size=100, hidden_size=128, intermediate_size=96, num_hidden_layers=2,
                                      num_attention_heads=2, max_position_embeddings=20, hidden_act="gelu",
                                      projection_dim=24 if projection else None, bos_token_id=98, eos_token_id=99,
                                      pad_token_id=99)
    cls = transformers.CLIPTextModelWithProjection if projection else transformers.CLIPTextModel
    return cls(cfg), "clip"


def _llm(kind: str):
    kw = dict(vocab_size=150, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
              num_key_value_heads=2, head_dim=16)
    if kind == "qwen2":
        return transformers.Qwen2Model(transformers.Qwen2Config(**kw)), "llm"
    if kind == "gemma3":
        return transformers.Gemma3TextModel(transformers.Gemma3TextConfig(**kw, query_pre_attn_scalar=16)), "llm"
    return transformers.LlamaModel(transformers.LlamaConfig(**kw)), "llm"


# (builder, the key prefix ComfyUI's files put before the model's names, legacy "scaled fp8" flavour)
CASES = {
    "bert": (_bert, "", False),
    "t5xxl": (lambda: _t5(False), "", True),  # t5xxl_fp8_e4m3fn_scaled.safetensors: bare names, scaled_fp8
    "umt5": (lambda: _t5(True), "text_encoders.umt5xxl.transformer.", False),
    # clip_l.safetensors names start text_model. (transformers 5's CLIPTextModel has no such level)
    "clip_l": (lambda: _clip(False), "text_model.", False),
    "clip_g": (lambda: _clip(True), "text_encoders.clip_g.transformer.", False),
    # qwen_2.5_vl_7b / mistral / gemma files: model.layers.N... (Qwen's also an lm_head: below)
    "qwen25_vl": (lambda: _llm("qwen2"), "model.", False),
    "mistral": (lambda: _llm("llama"), "model.", False),
    "gemma3": (lambda: _llm("gemma3"), "text_encoders.gemma3_12b.transformer.model.", False),
}
EXTRA = {"qwen25_vl": {"lm_head.weight": (150, 64)}}  # beside the text model, not FP8: not its part


def _model(case: str):
    torch.manual_seed(0)
    model, family = CASES[case][0]()
    with torch.no_grad():  # every parameter matters (no zero init), and norms are not all ones
        for p in model.parameters():
            p.copy_(torch.randn_like(p) * (0.5 if p.dim() < 2 else p.shape[-1] ** -0.5))
    return model.eval(), family


def _linears(model) -> list[str]:
    return sorted(n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear))


def _write(case: str, model, path: Path) -> list[str]:
    """The model's state under ComfyUI's names (tied copies dropped, as ComfyUI's files hold one
    table), every Linear FP8: ComfyUI's mixed-precision format, or the legacy scaled_fp8."""
    _, prefix, legacy = CASES[case]
    state = {k: v for k, v in model.state_dict().items() if k != "encoder.embed_tokens.weight"}
    layers = _linears(model)
    if not legacy:
        extra = {k: torch.randn(shape) for k, shape in EXTRA.get(case, {}).items()}
        write_fp8_checkpoint({**{prefix + k: v for k, v in state.items()}, **extra}, [prefix + n for n in layers], path)
        return [prefix + n for n in layers]
    out = {prefix + k: v.contiguous() for k, v in state.items()}
    for n in layers:
        out[prefix + n + ".weight"], out[prefix + n + ".scale_weight"] = quantize_weight(state[n + ".weight"])
    out[prefix + "scaled_fp8"] = torch.zeros(0, dtype=torch.float8_e4m3fn)
    save_file(out, str(path))
    return [prefix + n for n in layers]


def _eager_amax(model, layers: list[str], family: str, cfg: dict, prefix: str) -> dict[str, float]:
    """Every Linear's input amax in an eager run with the weights ComfyUI runs (dequantized)."""
    with torch.no_grad():
        for n in layers:
            lin = model.get_submodule(n[len(prefix):])
            w8, s = quantize_weight(lin.weight)
            lin.weight.copy_(w8.float() * s)
    amax: dict[str, float] = {}
    hooks = [m.register_forward_pre_hook(lambda m, a, _n=n: amax.__setitem__(_n, float(a[0].abs().max())))
             for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)]
    plan = SamplePlan(SMALL.batch, SMALL.image_tokens, SMALL.text_tokens, SMALL.seed)
    with torch.no_grad():
        model(**by_name(family).model.inputs(cfg, plan), return_dict=False)
    for h in hooks:
        h.remove()
    return amax


@pytest.mark.parametrize("case", list(CASES))
def test_streaming_pass_equals_eager_run(case, tmp_path):
    """The pass through transformers' class, one Linear live at a time and embedding rows read
    by id, sees what the whole dequantized model sees on the same token batch."""
    model, family = _model(case)
    path = tmp_path / "enc.safetensors"
    layers = _write(case, model, path)
    with LazyFile(str(path)) as f:
        header = f.header
    prepared = prepare(header)
    assert prepared.reason is None and prepared.detection.family == family
    with TensorSource.for_file(str(path), header) as src:
        result = run(src, prepared, SMALL)
    assert result.peak_live == 1
    eager = _eager_amax(model, layers, family, prepared.config, CASES[case][1])
    assert set(result.module_amax) == set(eager)
    for name, a in eager.items():
        assert result.module_amax[name] == pytest.approx(a, rel=1e-5, abs=1e-6), name
    assert sorted(n[: -len(".weight")] for n in result.amax) == sorted(layers)


@pytest.mark.parametrize("case", list(CASES))
def test_cli_default_scales_every_layer_from_the_forward_pass(case, tmp_path):
    model, family = _model(case)
    src, out = tmp_path / "enc.safetensors", tmp_path / "out.safetensors"
    layers = _write(case, model, src)
    p = run_cli("calibrate", src, out, *ARGS)  # the default --method auto
    assert p.exit_code == 0, p.stderr[-2000:]
    report = json.loads(p.stdout)
    got = {r["name"]: r for r in report["layers"]}
    kept = {r["name"]: r for r in report["excluded"]}
    # only CLIP-G's text_projection reads one vector per sample (the conditioning path)
    assert sorted([*got, *kept]) == sorted(layers) and all("text_projection" in n for n in kept), kept
    for r in got.values():
        assert r["method"] == "auto", r  # the default, which ran the forward pass here:
        assert r["assumption"].startswith(f"{family} forward amax"), r
        assert not any("not reached" in w or "ASSUMED" in w for w in r["warnings"]), r
        assert r["fp8_activations"] is False and any("ComfyUI runs it weight-only" in n for n in r["notes"]), r
    with LazyFile(str(out)) as f:
        calibration = json.loads((f.header.metadata or {})["fp8stream.calibration"])
    assert calibration["method"] == "auto" and calibration["transformers"] != "missing"
    if case == "t5xxl":  # determinism: the same token batch, the same bytes
        again = tmp_path / "again.safetensors"
        assert run_cli("calibrate", src, again, *ARGS).exit_code == 0
        assert again.read_bytes() == out.read_bytes()


@pytest.mark.parametrize("case", list(CASES))
def test_the_one_detector_names_the_family_with_or_without_prefix(case, tmp_path):
    from fp8stream.families.detect import detect_family

    model, family = _model(case)
    names = [CASES[case][1] + n for n in model.state_dict()]
    assert detect_family(names) == family
    assert detect_family([n.split(".", 1)[1] if n.startswith("model.") else n for n in names]) == family


def test_embedding_tables_are_read_only_at_the_ids_drawn(tmp_path):
    """UMT5-XXL's table is 4 GB as float32: the pass reads the rows of the ids it draws, never
    the whole table (counted at the source)."""
    torch.manual_seed(0)
    cfg = transformers.UMT5Config(vocab_size=4000, d_model=32, d_kv=8, d_ff=48, num_layers=1, num_heads=4,
                                  feed_forward_proj="gated-gelu")
    model = transformers.UMT5EncoderModel(cfg).eval()
    path = tmp_path / "umt5.safetensors"
    state = {k: v for k, v in model.state_dict().items() if k != "encoder.embed_tokens.weight"}
    write_fp8_checkpoint(state, _linears(model), path)
    with LazyFile(str(path)) as f:
        header = f.header
    rows: dict[str, int] = {}
    with TensorSource.for_file(str(path), header) as src:
        read_rows = src.read_rows

        def counting(name, start, stop):
            rows[name] = rows.get(name, 0) + stop - start
            return read_rows(name, start, stop)

        src.read_rows = counting
        result = run(src, prepare(header), SMALL)
    assert result.reason is None
    drawn = SMALL.batch * SMALL.text_tokens
    assert 0 < rows["shared.weight"] <= drawn * 16 < cfg.vocab_size  # near ids share one read (EMBEDDING_GAP)


def test_a_vision_tower_beside_the_text_model_is_not_reached_and_stays_weight_only(tmp_path):
    """Qwen2.5-VL's files hold its vision tower too (`visual.*`): outside the text model, so
    its FP8 layers are reported as not reached and kept weight-only, never guessed."""
    model, _ = _model("qwen25_vl")
    src, out = tmp_path / "qwen.safetensors", tmp_path / "out.safetensors"
    state = {"model." + k: v for k, v in model.state_dict().items()}
    state["visual.blocks.0.attn.qkv.weight"] = torch.randn(96, 32)
    layers = ["model." + n for n in _linears(model)] + ["visual.blocks.0.attn.qkv"]
    write_fp8_checkpoint(state, layers, src)
    p = run_cli("calibrate", src, out, *ARGS)
    assert p.exit_code == 0, p.stderr[-2000:]
    report = json.loads(p.stdout)
    (kept,) = report["excluded"]
    assert kept["name"] == "visual.blocks.0.attn.qkv" and "not reached by the forward pass" in json.dumps(kept)
    assert sorted(r["name"] for r in report["layers"]) == sorted(layers[:-1])
    assert all(r["assumption"].startswith("llm forward amax") for r in report["layers"])
