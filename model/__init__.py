"""aln.model: image backbones, the clinical-fusion head, checkpoints and the reference predictor.

torch + timm. The backbones are cropper-free: they see only float32 (N, 3, 256, 256) crops made by
:mod:`aln.preprocessing`.
"""
