"""The coded concepts the result SR uses: standard codes where they exist, a private scheme else.

No standard terminology (SNOMED CT, LOINC, DCM) has a concept for "probability that the axillary
lymph nodes are still positive after neoadjuvant therapy" or for a model's decision at its
operating point, so those concepts come from this project's private coding scheme
:data:`SCHEME`, which every SR declares in its Coding Scheme Identification Sequence. The
procedure, the finding and the units are standard.
"""

from __future__ import annotations

from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

SCHEME = "99ALNTRITON"
"""Coding Scheme Designator of the private concepts (``99`` prefix: a local scheme, PS3.16 8.1)."""
SCHEME_NAME = "aln-triton axillary lymph node prediction concepts"

PROBABILITY = Code("ALN-P", SCHEME, "Probability of positive axillary nodes after NAT")
"""Code Meaning is at most 64 characters (LO): NAT is neoadjuvant therapy."""
DECISION = Code("ALN-D", SCHEME, "Axillary nodal status at the model operating point")
LIKELY_POSITIVE = Code("ALN-D1", SCHEME, "Axillary lymph nodes likely positive")
LOW_RISK = Code("ALN-D0", SCHEME, "Low risk of positive axillary lymph nodes")
CROP = Code("ALN-C", SCHEME, "Region analysed by the model")

PROCEDURE = Code("71651007", "SCT", "Mammography")
FINDING = codes.SCT.Lesion
NO_UNITS = Code("1", "UCUM", "no units")
