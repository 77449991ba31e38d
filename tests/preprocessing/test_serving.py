"""The served preprocess model's work, without a server: overrides, image-only models, manifest."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from aln.preprocessing import contract
from aln.preprocessing.clinical import ClinicalSchema
from aln.preprocessing.contract import ImageOptions, auxiliary_options
from aln.preprocessing.crop import CropSpec
from aln.preprocessing.errors import InvalidRequestError
from aln.preprocessing.manifest import Manifest
from aln.preprocessing.serving import RawRequest, StudyPreprocessor


def _manifest(auxiliary: bool = True) -> Manifest:
    schema = ClinicalSchema.load()
    return Manifest(
        model_name="aln_test",
        model_version="t1",
        backbone="efficientnet_b0",
        clinical_schema=schema.to_dict(),
        crop=CropSpec(),
        auxiliary=auxiliary,
        hidden_dim=8,
        training={"status": "test"},
        clinical_dim=schema.width,
    )


def _request(primary, auxiliary=None, options=None, aux_on_primary=False):
    arrays = {
        contract.PRIMARY_DICOM.name: np.frombuffer(primary.dicom, np.uint8)[None],
        contract.PRIMARY_REGION.name: contract.pack_region(primary.lesion_centre)[None],
        contract.CLINICAL_RECORD.name: np.array([[json.dumps(primary.clinical).encode()]], object),
    }
    if auxiliary is not None:
        if not aux_on_primary:
            arrays[contract.AUXILIARY_DICOM.name] = np.frombuffer(auxiliary.dicom, np.uint8)[None]
        arrays[contract.AUXILIARY_REGION.name] = contract.pack_region(
            auxiliary.auxiliary_centre, auxiliary.auxiliary_bbox
        )[None]
    if options is not None:
        arrays[contract.REQUEST_OPTIONS.name] = np.array([[json.dumps(options).encode()]], object)
    return RawRequest.from_arrays(arrays)


def test_the_auxiliary_inherits_overrides_only_from_its_own_dicom():
    primary = ImageOptions(laterality="L", view="CC", spacing_mm=0.07)
    own = ImageOptions(view="MLO")
    assert auxiliary_options(primary, own, same_dicom=True) == ImageOptions("L", "MLO", 0.07)
    assert auxiliary_options(primary, own, same_dicom=False) == own
    assert auxiliary_options(primary, ImageOptions(), same_dicom=False) == ImageOptions()


def test_an_auxiliary_mlo_on_another_file_keeps_its_own_view(make_case):
    """The bug the rule fixes: the primary's --view CC used to reach an MLO on another file."""
    cc = make_case("hologic", seed=3, laterality="L", view="CC")
    mlo = make_case("hologic", seed=4, laterality="L", view="MLO")
    pre = StudyPreprocessor(_manifest())
    options = {"primary": {"view": "CC"}}
    other_file = pre(_request(cc, mlo, options)).provenance
    assert other_file["primary"]["view"] == "CC" and other_file["auxiliary"]["view"] == "MLO"
    # the same DICOM: the auxiliary region takes the primary's override
    on_primary = pre(_request(mlo, mlo, {"primary": {"view": "CC"}}, aux_on_primary=True))
    assert on_primary.provenance["auxiliary"]["view"] == "CC"


def test_an_auxiliary_region_for_an_image_only_model_is_refused_naming_the_input(make_case):
    case = make_case("hologic", seed=3, laterality="L", view="CC")
    pre = StudyPreprocessor(_manifest(auxiliary=False))
    assert pre(_request(case)).auxiliary_present[0] == 0.0  # the primary alone is answered
    with pytest.raises(
        InvalidRequestError, match="'auxiliary_region' was sent, but model aln_test"
    ):
        pre(_request(case, case, aux_on_primary=True))


def test_manifest_identity_is_the_provenance_model(make_case):
    manifest = replace(_manifest(), weights_sha256="ab" * 32)
    case = make_case("hologic", seed=3, laterality="L", view="CC")
    provenance = StudyPreprocessor(manifest)(_request(case)).provenance
    assert (
        provenance["model"]
        == manifest.identity
        == {
            "name": "aln_test",
            "version": "t1",
            "weights_sha256": "ab" * 32,
            "backbone": "efficientnet_b0",
        }
    )


def test_served_dicom_inputs_are_views_over_the_request_tensors(make_case):
    case = make_case("hologic", seed=3, laterality="L", view="CC")
    tensor = np.frombuffer(case.dicom, np.uint8)[None]
    request = RawRequest.from_arrays(
        {
            contract.PRIMARY_DICOM.name: tensor,
            contract.PRIMARY_REGION.name: contract.pack_region(case.lesion_centre)[None],
            contract.CLINICAL_RECORD.name: np.array([[json.dumps(case.clinical).encode()]], object),
        }
    )
    assert np.shares_memory(np.frombuffer(request.primary_dicom, np.uint8), tensor)


def test_an_auxiliary_file_with_the_primary_bytes_counts_as_the_same_dicom(make_case):
    """Sent twice (by a caller other than the SDK), the bytes compare equal without a copy."""
    cc = make_case("hologic", seed=3, laterality="L", view="CC")
    pre = StudyPreprocessor(_manifest())
    twice = pre(_request(cc, cc, {"primary": {"view": "MLO"}})).provenance
    assert twice["auxiliary"]["view"] == "MLO"
