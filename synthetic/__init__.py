"""aln.synthetic: demo and test data, off the production floor.

No public data set pairs pre-treatment mammograms with post-NAT nodal status, so tests, the demo,
benchmarks, warm-up and training examples use synthetic studies:

* :mod:`aln.synthetic.phantom`: a breast with a lesion of known size, margin and contrast;
* :mod:`aln.synthetic.vendors`: vendor headers, grey-level conventions and transfer syntaxes;
* :mod:`aln.synthetic.labels`: the cohort's documented label model and clinical records;
* :mod:`aln.synthetic.mammogram`: one mammogram with its ground truth (:func:`synth_case`);
* :mod:`aln.synthetic.cohort`: folders of studies with a cohort manifest (:func:`write_cohort`).

Nothing on the serving path imports this package except the preprocess model's warm-up data,
which ``aln build-repo`` writes once.
"""

from __future__ import annotations

from typing import Literal

Vendor = Literal["ge", "hologic", "siemens", "fuji", "film"]
VENDORS: tuple[Vendor, ...] = ("ge", "hologic", "siemens", "fuji", "film")
"""Vendor profiles (:data:`aln.synthetic.vendors.PROFILES`); named here so the command line
lists them without loading pydicom."""
TRANSFER_SYNTAXES = ("explicit", "implicit", "jpeg2000", "jpeg2000-lossy", "htj2k", "jpegls", "rle")
"""Transfer syntaxes a synthetic study can be encoded in (:func:`aln.synthetic.vendors.encode`)."""
