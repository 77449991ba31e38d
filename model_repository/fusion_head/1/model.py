"""Triton Python-backend model fusion_head: see aln.serving.triton_models."""

from aln.serving.triton_models import EngineModel as TritonPythonModel

__all__ = ["TritonPythonModel"]
