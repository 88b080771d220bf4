"""The ONNX target: graphs exported one at a time with their weights streamed from the checkpoint
(:mod:`.onnx`), then validated against the PyTorch reference (:mod:`.validate`).
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from ..engine import MANIFEST
from ..errors import VoxtralError
from ..reporting import steps
from ..runtime.constants import DEFAULT_CAPACITY
from .engine_dir import start_engine_dir
from .graphs import graph_defs
from .onnx import OPSET, export_graph

log = logging.getLogger(__name__)

PRECISIONS = ("fp32", "fp16", "int8", "int4", "int8-backbone")


def build_onnx_engine(model_dir: str | Path, engine_dir: str | Path, precision: str | None = None,
                      capacity: int = DEFAULT_CAPACITY, with_velocity: bool = False, validate: bool = True,
                      progress: bool = True, target: str = "onnx", label: str | None = None) -> Path:
    """Export ``model_dir``'s ONNX graphs to ``engine_dir``; returns the engine path. ``target``
    names the manifest's target (a TensorRT engine directory starts as an ONNX one); ``label``,
    what the log calls the export when another target builds on it (that target then says when
    its engine is written)."""
    from ..model.loading import build_on_meta

    precision = precision or "fp32"
    if precision not in PRECISIONS:
        raise VoxtralError(
            f"precision '{precision}' is not available for target {target}; available: {', '.join(PRECISIONS)}"
        )
    if capacity < 2:
        raise VoxtralError("capacity must be at least 2 positions")
    draft = start_engine_dir(model_dir, engine_dir, label or f"an ONNX {precision} engine")
    model_dir, out, config, reader = draft.model_dir, draft.out, draft.config, draft.reader
    model = build_on_meta(config)
    constants = {name: buf.clone() for name, buf in model.named_buffers() if not buf.is_meta}
    model = model.to("meta")
    graphs = {}
    for gdef in graph_defs(config, capacity, with_velocity):
        path = out / f"{gdef.name}.onnx"
        bar = None

        def report(done, total, name=path.name):
            nonlocal bar
            if bar is None:  # opened when writing starts: the trace before it is no step of the bar
                bar = steps(desc=name, unit="tensor", total=total, disable=not progress)
            bar.update(done - bar.n)

        try:
            data_files = export_graph(gdef, model, reader, constants, path, precision, report)
        finally:
            if bar is not None:
                bar.close()
        graphs[gdef.name] = {"file": path.name, "data_files": data_files, **gdef.io_spec()}
    del model

    manifest = draft.manifest(target, precision, capacity, graphs, opset=OPSET)
    if validate:
        from .validate import validate_engine

        manifest["validation"] = validate_engine(out, model_dir, manifest=manifest)
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2))
    if label is None:
        log.info("engine written to %s in %.1f s", out, time.perf_counter() - draft.started)
    return out
