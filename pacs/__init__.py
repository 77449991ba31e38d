"""aln.pacs: the hospital side of the ensemble (DICOM Structured Report out, PACS in).

Needs the ``pacs`` extra (pydicom and highdicom). :mod:`aln.pacs.report` writes a prediction as a
TID 1500 Measurement Report in a Comprehensive 3D SR that a PACS files beside the study.
"""
