"""Triton Python-backend model preprocess: see aln.serving.triton_models."""

from aln.serving.triton_models import PreprocessModel as TritonPythonModel

__all__ = ["TritonPythonModel"]
