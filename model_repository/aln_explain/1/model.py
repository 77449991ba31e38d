"""Triton Python-backend model aln_explain: see aln.serving.triton_models."""

from aln.serving.triton_models import ExplainModel as TritonPythonModel

__all__ = ["TritonPythonModel"]
