"""What a run of the forward pass does before its first copied byte: the header-only work
(prepare, the meta pass) builds the model on the meta device only."""

from __future__ import annotations

from pathlib import Path

import forward_tiny as ft
from fp8stream.io.header import read_header
from fp8stream.methods.forward import conditioning, forward_pass


def _header(family: str, folder: Path):
    with open(ft.comfy_file(family, folder), "rb") as f:
        return read_header(f)


def test_header_only_work_computes_no_buffer(tmp_path, monkeypatch):
    """prepare and the meta pass need names and shapes only: the models they build hold no real
    tensor (SD3's position table, 0.9 s to compute at full size on 2 cores, is not computed)."""
    devices = []
    build = forward_pass.meta_model

    def recorded(*args, **kwargs):
        model = build(*args, **kwargs)
        devices.append({t.device.type for t in [*model.parameters(), *model.buffers()]})
        return model

    monkeypatch.setattr(forward_pass, "meta_model", recorded)
    monkeypatch.setattr(conditioning, "meta_model", recorded)
    prepared = forward_pass.prepare(_header("sd3", tmp_path))
    assert prepared.reason is None
    assert conditioning.from_shapes(prepared) is not None
    assert devices == [{"meta"}, {"meta"}]
