"""One bad study inside a real dynamic batch of ``preprocess`` fails alone.

The default repository gives ``preprocess`` one study per batch, so the served default never
batches studies together; this test serves ``--preprocess-max-batch 4`` with one instance and a
long queue delay, so concurrent studies are batched, proves from Triton's own batch statistics
that they were, and checks that the bad one is refused by name while its batch-mates are answered.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from aln.benchmarks import triton_stats
from aln.client import AlnClient, ImageInput, InvalidInputError, Prediction
from aln.preprocessing import contract
from tests.corpus import bad_studies, names_cause


@pytest.fixture(scope="module")
def batching_url(repository_variant, serve_repository):
    repo = repository_variant(
        "batching", preprocess_max_batch=4, preprocess_instances=1, max_queue_delay_us=400_000
    )
    with serve_repository(repo) as url:
        yield url


@pytest.mark.parametrize("name", ["truncated", "lesion_outside", "clinical_missing"])
def test_a_bad_study_in_a_preprocess_batch_fails_alone(batching_url, study, name):
    bad = next((b for b in bad_studies(study) if b.name == name), None)
    assert bad is not None, [b.name for b in bad_studies(study)]
    good = ImageInput(study.dicom, study.lesion_centre)
    before = triton_stats.snapshot(batching_url)
    with AlnClient(batching_url, timeout_s=60) as client, ThreadPoolExecutor(4) as pool:
        calls = [
            pool.submit(client.predict, good, study.clinical),
            pool.submit(
                client.predict,
                ImageInput(bad.dicom, bad.lesion, bad.bbox, **bad.options),
                bad.clinical,
            ),
            pool.submit(client.predict, good, study.clinical),
            pool.submit(client.predict, good, study.clinical),
        ]
        outcomes = []
        for call in calls:
            try:
                outcomes.append(call.result())
            except InvalidInputError as exc:
                outcomes.append(exc)
    after = triton_stats.settled(batching_url, before, {contract.PREPROCESS: len(calls) - 1})
    window = triton_stats.window(before, after)
    sizes = window[contract.PREPROCESS]["batch_sizes"]
    assert max(sizes) > 1, sizes  # the studies really shared a preprocess batch
    error = outcomes[1]
    assert isinstance(error, InvalidInputError) and error.status == "INVALID_ARGUMENT"
    assert names_cause(bad, error.message), error.message
    answers = [o for i, o in enumerate(outcomes) if i != 1]
    assert all(isinstance(a, Prediction) for a in answers), answers
    assert len({round(a.probability, 6) for a in answers}) == 1
