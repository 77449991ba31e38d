"""The blocking gRPC client."""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any

import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from aln.client import _request
from aln.client.errors import (
    AlnClientError,
    ModelUnavailableError,
    from_server_exception,
)
from aln.client.shared_memory import Lease, Region, stale_regions, unlink
from aln.client.types import Explanation, ImageInput, Prediction, Study
from aln.preprocessing import contract


class AlnClient(_request.ClientSettings):
    """Send studies to the ``aln_ensemble`` over gRPC.

    Constructor arguments: see :class:`aln.client._request.ClientSettings` (``url``,
    ``timeout_s``, ``retry``, ``cancel_grace_s``, TLS files, ``model_name``,
    ``shared_memory``). Thread-safe: ``predict_many`` shares one client between threads.

    Example:
        >>> with AlnClient("localhost:8001") as client:  # doctest: +SKIP
        ...     p = client.predict(ImageInput("lcc.dcm", lesion=(1794, 1334)), record)
        ...     print(p.probability, p.provenance["primary"]["spacing_mm"])
    """

    _triton = grpcclient

    def __enter__(self) -> AlnClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Unregister and unlink this client's shared-memory regions, then close the channel."""
        if self._shared is not None:
            for region in self._shared.pool.drain():
                self._release(region)
        self._client.close()

    def predict(
        self,
        primary: ImageInput,
        clinical: Mapping[str, Any] | str,
        *,
        auxiliary: ImageInput | None = None,
        timeout_s: float | None = None,
    ) -> Prediction:
        """Predict one study.

        Args:
            primary: The primary lesion image and region.
            clinical: The clinical record (named fields, or JSON text).
            auxiliary: Optional auxiliary region (another DICOM, or the primary's bytes again).
            timeout_s: Deadline for this call, retries included (default: the client's).

        Raises:
            InvalidInputError: The server named what was wrong with the study.
            ModelUnavailableError: Still unavailable after the bounded retries.
            InferenceTimeoutError: The deadline passed.
            ServerError: Another server-side failure.
        """
        arrays = _request.build_arrays(primary, clinical, auxiliary)
        result = self._infer(self.model_name, arrays, _request.ENSEMBLE_OUTPUT_NAMES, timeout_s)
        return self._with_operating_point(_request.parse_result(result))

    def explain(
        self,
        primary: ImageInput,
        clinical: Mapping[str, Any] | str,
        *,
        auxiliary: ImageInput | None = None,
        grid: int | None = None,
        timeout_s: float | None = None,
    ) -> Explanation:
        """Explain one study: the prediction and an occlusion map over its primary crop.

        Served by ``aln_explain`` with the same engines as predictions, at lower precedence: the
        occluded crops queue behind predictions a few at a time. It costs about ``grid**2``
        backbone runs (64 at the default grid of 8).

        Args:
            primary: The primary lesion image and region.
            clinical: The clinical record (named fields, or JSON text).
            auxiliary: Optional auxiliary region.
            grid: Cells per side of the map (default 8; the server refuses sides outside
                :data:`aln.serving.occlusion.GRID_BOUNDS`, naming them).
            timeout_s: Deadline for this call, retries included (default: the client's).

        Raises:
            InvalidInputError: A bad study (as for a prediction) or grid.
            ModelUnavailableError: Still unavailable after the bounded retries.
            InferenceTimeoutError: The deadline passed.
        """
        arrays = _request.explain_arrays(primary, clinical, auxiliary, grid)
        result = self._infer(contract.EXPLAIN, arrays, _request.EXPLAIN_OUTPUT_NAMES, timeout_s)
        explanation = _request.parse_explanation(result)
        prediction = self._with_operating_point(explanation.prediction)
        return replace(explanation, prediction=prediction)

    def _infer(
        self, model: str, arrays: dict[str, Any], outputs: tuple[str, ...], timeout_s: float | None
    ) -> Any:
        """One inference with the deadline, the retries and shared memory; the raw result."""
        lease = self._lease(arrays)
        try:
            placements = lease.placements if lease is not None else None
            inputs = _request.infer_inputs(grpcclient, arrays, placements)
            requested = [grpcclient.InferRequestedOutput(name) for name in outputs]
            attempts = self._attempts(timeout_s)
            registered_again = False
            while True:
                server_timeout_us, grpc_deadline_s = attempts.timeouts()
                try:
                    result = self._client.infer(
                        model,
                        inputs,
                        outputs=requested,
                        request_id=attempts.request_id,
                        timeout=server_timeout_us,
                        client_timeout=grpc_deadline_s,
                    )
                except InferenceServerException as exc:
                    if lease is not None and _request.region_lost(exc, lease, registered_again):
                        registered_again = True
                        try:
                            self._register(lease)
                        except InferenceServerException as again:
                            raise from_server_exception(again) from again
                        continue
                    time.sleep(attempts.failed(exc))
                    continue
                attempts.answered()
                return result
        finally:
            if lease is not None:
                self._give_back(lease)

    def _with_operating_point(self, prediction: Prediction) -> Prediction:
        """Attach the served model's operating point, read once per model version."""
        if prediction.model_version not in self._operating_points:
            try:
                config = self._client.get_model_config(self.model_name, as_json=True)
            except InferenceServerException:
                config = None  # a server that does not publish its config: no figures
            self._learn_operating_point(config, prediction.model_version)
        return self._attach_operating_point(prediction)

    def _lease(self, arrays: dict[str, Any]) -> Lease | None:
        """Write the DICOM inputs into a region of their own, registering it when new."""
        if self._shared is None:
            return None
        lease = self._shared.lease(_request.shared_inputs(arrays))
        if lease is None or not lease.new:
            return lease
        try:
            if self._shared.reap_first():
                status = self._client.get_system_shared_memory_status(as_json=True)
                for name in stale_regions(status.get("regions", {})):
                    self._client.unregister_system_shared_memory(name)
                    unlink(name)
            self._register(lease)
        except InferenceServerException as exc:
            self._shared.fall_back(lease, self.url, exc.message() or str(exc))
            return None
        return lease

    def _register(self, lease: Lease) -> None:
        region = lease.region
        self._client.register_system_shared_memory(region.name, region.key, region.size)

    def _give_back(self, lease: Lease) -> None:
        assert self._shared is not None
        for retired in self._shared.finish(lease):
            self._release(retired)

    def _release(self, region: Region) -> None:
        assert self._shared is not None
        for wait in (*_request.UNREGISTER_BACKOFF_S, None):
            try:
                self._client.unregister_system_shared_memory(region.name)
                break
            except InferenceServerException as exc:
                if wait is None or _request.unregister_failed_for_good(exc):
                    break  # server gone: unlink regardless
                time.sleep(wait)
        self._shared.pool.forget(region)

    def predict_many(
        self,
        studies: Iterable[Study],
        *,
        concurrency: int = 8,
        timeout_s: float | None = None,
        return_exceptions: bool = False,
    ) -> list[Prediction | AlnClientError]:
        """Predict many studies with up to ``concurrency`` requests in flight.

        Results come back in input order. With ``return_exceptions`` a failed study yields its
        :class:`AlnClientError` in place of a prediction; otherwise the first error is raised.
        """

        def one(study: Study) -> Prediction | AlnClientError:
            try:
                return self.predict(
                    study.primary, study.clinical, auxiliary=study.auxiliary, timeout_s=timeout_s
                )
            except AlnClientError as exc:
                if return_exceptions:
                    return exc
                raise

        with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
            return list(pool.map(one, studies))

    def wait_until_ready(self, timeout_s: float = 120.0, poll_s: float = 0.5) -> None:
        """Block until the server and the ensemble are ready.

        Raises:
            ModelUnavailableError: Not ready within ``timeout_s``.
        """
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                if self._client.is_server_ready() and self._client.is_model_ready(self.model_name):
                    return
            except InferenceServerException:
                pass
            time.sleep(poll_s)
        raise ModelUnavailableError(
            f"'{self.model_name}' at {self.url} was not ready within {timeout_s:.0f} s",
            "UNAVAILABLE",
        )

    def server_metadata(self) -> dict[str, Any]:
        """Triton's server metadata (name, version, extensions) and the ensemble's.

        Raises:
            AlnClientError: Mapped from the server's status.
        """
        try:
            server = self._client.get_server_metadata(as_json=True)
            model = self._client.get_model_metadata(self.model_name, as_json=True)
        except InferenceServerException as exc:
            raise from_server_exception(exc) from exc
        return {"server": server, "model": model}
