"""aln-triton: predict axillary lymph-node status after neoadjuvant therapy from a mammogram.

The layers live in their own folders and import names: :mod:`aln.preprocessing`,
:mod:`aln.model`, :mod:`aln.export`, :mod:`aln.client`, :mod:`aln.training`. This package holds
the ``aln`` command line.
"""

__version__ = "0.1.0"
