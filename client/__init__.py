"""aln.client: the gRPC SDK for the ``aln_ensemble`` (numpy + tritonclient[grpc] only).

Example:
    >>> from aln.client import AlnClient, ImageInput
    >>> with AlnClient("localhost:8001") as client:  # doctest: +SKIP
    ...     prediction = client.predict(ImageInput("lcc.dcm", lesion=(1794, 1334)), record)
"""

from aln.client._request import RetryPolicy
from aln.client.aio import AsyncAlnClient
from aln.client.errors import (
    AlnClientError,
    InferenceTimeoutError,
    InvalidInputError,
    ModelUnavailableError,
    ServerError,
)
from aln.client.sync import AlnClient
from aln.client.types import Explanation, ImageInput, Prediction, Study
from aln.preprocessing.decision import Decision, OperatingPoint

__all__ = [
    "AlnClient",
    "AlnClientError",
    "AsyncAlnClient",
    "Decision",
    "Explanation",
    "ImageInput",
    "InferenceTimeoutError",
    "InvalidInputError",
    "ModelUnavailableError",
    "OperatingPoint",
    "Prediction",
    "RetryPolicy",
    "ServerError",
    "Study",
]
