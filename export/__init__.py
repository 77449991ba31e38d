"""aln.export: ONNX export, parity checks, TensorRT plans and Triton model-repository generation."""
