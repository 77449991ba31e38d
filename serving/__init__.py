"""aln.serving: what runs the served ensemble.

* :mod:`aln.serving.spec`: the typed repository spec and the engine parameters, defined once;
* :mod:`aln.serving.engine`: the engine runtime the engine models share (ONNX Runtime);
* :mod:`aln.serving.triton_models`: the Python-backend models (thin adapters over library code);
* :mod:`aln.serving.server`: the launcher of the Triton server bundled in ``nvidia-pytriton``;
* :mod:`aln.serving.supervisor`: restores a model whose Python-backend stub died;
* :mod:`aln.serving.inflight`: what each model instance is working on, readable after a crash.

:mod:`aln.export.repository` writes repositories from the spec; this room serves them.
"""
