import json

import numpy as np
import pytest

from aln.preprocessing.clinical import ClinicalSchema
from aln.preprocessing.errors import ClinicalRecordError, ConfigurationError

RECORD = {
    "age_years": 52,
    "tumour_size_mm": 28.0,
    "ki67_percent": 40,
    "menopausal_status": "post",
    "ct_stage": "T2",
    "cn_stage": "N1",
    "histological_grade": "G3",
    "er_status": "positive",
    "pr_status": "negative",
    "her2_status": "3+",
    "molecular_subtype": "luminal_b",
    "nat_regimen": "anti_her2_dual",
}


@pytest.fixture(scope="module")
def schema():
    return ClinicalSchema.load()


def test_encoding_width_and_values(schema):
    vector = schema.encode(RECORD)
    assert vector.dtype == np.float32 and vector.shape == (schema.width,) == (
        len(schema.feature_names),
    )
    names = schema.feature_names
    assert vector[names.index("age_years")] == pytest.approx((52 - 50) / 10)
    assert vector[names.index("her2_status=3+")] == 1.0
    assert vector[names.index("her2_status=unknown")] == 0.0
    # one-hot: each categorical field sums to 1
    assert sum(vector[i] for i, n in enumerate(names) if n.startswith("ct_stage=")) == 1.0


def test_unknown_category_slot(schema):
    vector = schema.encode({**RECORD, "histological_grade": "unknown"})
    assert vector[schema.feature_names.index("histological_grade=unknown")] == 1.0


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"age_years": None}, "'age_years' is missing"),
        (
            {"age_years": 130},
            r"'age_years' has value 130, it must be in the range \(18, 100\) years",
        ),
        ({"age_years": "52"}, "'age_years' has value '52' of type str, it must be a number"),
        ({"age_years": True}, "of type bool"),
        ({"ki67_percent": float("nan")}, "'ki67_percent' has value nan"),
        (
            {"her2_status": "4+"},
            "'her2_status' has unknown category '4\\+', it must be one of 0, 1\\+, 2\\+, 3\\+, unknown",
        ),
        ({"ct_stage": 2.5}, "'ct_stage' has value 2.5 of type float"),
        ({"bmi": 24}, "'bmi' is not in schema aln-clinical 1.0.0"),
    ],
)
def test_field_level_errors(schema, change, message):
    record = dict(RECORD)
    for key, value in change.items():
        if value is None:
            del record[key]
        else:
            record[key] = value
    with pytest.raises(ClinicalRecordError, match=message) as info:
        schema.encode(record)
    assert info.value.field == next(iter(change))


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"", "empty"),
        (b"{not json", "not valid JSON"),
        (b"[1, 2]", "JSON object"),
        (b"x" * 70000, "above the limit"),
    ],
)
def test_json_errors(schema, payload, message):
    with pytest.raises(ClinicalRecordError, match=message):
        schema.encode_json(payload)


def test_schema_round_trip(schema):
    assert ClinicalSchema.from_dict(json.loads(json.dumps(schema.to_dict()))) == schema
    with pytest.raises(ConfigurationError, match="schema is malformed: field type 'text'"):
        ClinicalSchema.from_dict(
            {"name": "x", "version": "1", "fields": [{"name": "a", "type": "text"}]}
        )
