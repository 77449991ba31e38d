"""ONNX Runtime engines as the embedded profile serves them, one batch of requests at a time.

The Triton adapter (``model_repository/backbone_primary/1/model.py``, shared by both backbones and
the fusion head) concatenates the requests of a dynamic batch, runs one ONNX Runtime call and
splits the outputs back; that logic lives here so it is tested without a server.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

Arrays = dict[str, npt.NDArray[Any]]


class OnnxEngine:
    """One ONNX graph on ONNX Runtime's CPU provider, full graph optimisation.

    Args:
        path: The ``.onnx`` file.
        threads: Intra-op threads.
        spinning: Let idle intra-op threads spin-wait (ONNX Runtime's default). Off by default:
            in a server the cores are shared with preprocessing; measured on 2 cores, spinning
            cost 22 core-ms per study in the backbone and 5 in the fusion head
            (``benchmarks/README.md``).
        skip_all_zero_rows: Skip rows whose every input value is 0 and answer zeros for them.
            The preprocess model sends an all-zero auxiliary image when a study has none (a real
            crop is never all zeros after normalisation), and the fusion head multiplies that
            branch by the present flag, so skipping it changes no answer and halves the work of
            studies without an auxiliary image.
    """

    def __init__(
        self,
        path: Path,
        threads: int = 1,
        skip_all_zero_rows: bool = False,
        spinning: bool = False,
    ) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        if not spinning:  # idle threads sleep, leaving the cores to preprocessing
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.output_widths = [o.shape[1:] for o in self.session.get_outputs()]
        self.skip_all_zero_rows = skip_all_zero_rows

    def run(self, feeds: Arrays) -> Arrays:
        """Run one batch (every input has the same leading batch size)."""
        batch = next(iter(feeds.values())).shape[0]
        if not self.skip_all_zero_rows:
            return dict(zip(self.output_names, self.session.run(None, feeds), strict=True))
        keep = np.ones(batch, dtype=bool)
        for value in feeds.values():
            keep &= value.reshape(batch, -1).any(axis=1)
        outputs = {
            name: np.zeros((batch, *(int(d) for d in width)), dtype=np.float32)
            for name, width in zip(self.output_names, self.output_widths, strict=True)
        }
        if keep.any():
            results = self.session.run(None, {k: v[keep] for k, v in feeds.items()})
            for name, value in zip(self.output_names, results, strict=True):
                outputs[name][keep] = value
        return outputs

    def run_requests(self, requests: Sequence[Arrays]) -> list[Arrays]:
        """Run many requests as one batch and split the outputs back per request."""
        sizes = [next(iter(r.values())).shape[0] for r in requests]
        feeds = {name: np.concatenate([r[name] for r in requests]) for name in self.input_names}
        outputs = self.run(feeds)
        bounds = np.cumsum([0, *sizes])
        return [
            {name: value[bounds[i] : bounds[i + 1]] for name, value in outputs.items()}
            for i in range(len(requests))
        ]
