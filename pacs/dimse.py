"""Sending studies to a DICOM node by C-STORE, as a modality or a PACS routes them to an AI node.

The gateway itself reads over DICOMweb; this is the other way in that hospitals use (DIMSE over
TCP, pynetdicom). It is what the demo and the tests push studies with, and what an integration
engineer can use to try a node: ``store(datasets, "127.0.0.1", 4242, "ORTHANC")``.
"""

from __future__ import annotations

from collections.abc import Sequence

from pydicom import Dataset

from aln.pacs.errors import PacsError

CALLING_AET = "ALNMODALITY"
"""The calling AE title the project's C-STORE sender uses (Orthanc accepts any by default)."""
SUCCESS = 0x0000


def store(
    datasets: Sequence[Dataset],
    host: str,
    port: int,
    called_aet: str,
    calling_aet: str = CALLING_AET,
    timeout_s: float = 30.0,
) -> None:
    """Send each dataset by C-STORE over one association.

    A presentation context is proposed for every SOP class and transfer syntax among
    ``datasets``, so compressed images travel as they are stored.

    Raises:
        PacsError: The association was refused or aborted, or a store did not succeed (the SOP
            Instance UID and the DIMSE status named).
    """
    from pynetdicom import AE

    ae = AE(ae_title=calling_aet)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout_s
    for sop_class, syntax in sorted(
        {(str(ds.SOPClassUID), str(ds.file_meta.TransferSyntaxUID)) for ds in datasets}
    ):
        ae.add_requested_context(sop_class, [syntax])
    association = ae.associate(host, port, ae_title=called_aet)
    if not association.is_established:
        raise PacsError(
            f"The DICOM node {called_aet}@{host}:{port} refused or did not answer the "
            f"association from {calling_aet}"
        )
    try:
        for dataset in datasets:
            status = association.send_c_store(dataset)
            code = getattr(status, "Status", None)
            if code != SUCCESS:
                shown = "no answer" if code is None else f"status 0x{int(code):04X}"
                raise PacsError(
                    f"C-STORE of SOP instance {dataset.SOPInstanceUID} to {called_aet}@{host}:"
                    f"{port} failed: {shown}"
                )
    finally:
        if association.is_established:
            association.release()
