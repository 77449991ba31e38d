"""The asyncio gRPC client: same signatures as :class:`aln.client.AlnClient`."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Mapping
from dataclasses import replace
from typing import Any

import tritonclient.grpc.aio as aioclient
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


class AsyncAlnClient(_request.ClientSettings):
    """Asyncio twin of :class:`aln.client.AlnClient` (same arguments and methods, awaited).

    Example:
        >>> async with AsyncAlnClient("localhost:8001") as client:  # doctest: +SKIP
        ...     p = await client.predict(ImageInput("lcc.dcm", lesion=(1794, 1334)), record)
    """

    _triton = aioclient

    async def __aenter__(self) -> AsyncAlnClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Unregister and unlink this client's shared-memory regions, then close the channel."""
        if self._shared is not None:
            for region in self._shared.pool.drain():
                await self._release(region)
        await self._client.close()

    async def predict(
        self,
        primary: ImageInput,
        clinical: Mapping[str, Any] | str,
        *,
        auxiliary: ImageInput | None = None,
        timeout_s: float | None = None,
    ) -> Prediction:
        """Predict one study (see :meth:`aln.client.AlnClient.predict`)."""
        arrays = _request.build_arrays(primary, clinical, auxiliary)
        result = await self._infer(
            self.model_name, arrays, _request.ENSEMBLE_OUTPUT_NAMES, timeout_s
        )
        return await self._with_operating_point(_request.parse_result(result))

    async def explain(
        self,
        primary: ImageInput,
        clinical: Mapping[str, Any] | str,
        *,
        auxiliary: ImageInput | None = None,
        grid: int | None = None,
        timeout_s: float | None = None,
    ) -> Explanation:
        """Explain one study (see :meth:`aln.client.AlnClient.explain`)."""
        arrays = _request.explain_arrays(primary, clinical, auxiliary, grid)
        result = await self._infer(
            contract.EXPLAIN, arrays, _request.EXPLAIN_OUTPUT_NAMES, timeout_s
        )
        explanation = _request.parse_explanation(result)
        prediction = await self._with_operating_point(explanation.prediction)
        return replace(explanation, prediction=prediction)

    async def _infer(
        self, model: str, arrays: dict[str, Any], outputs: tuple[str, ...], timeout_s: float | None
    ) -> Any:
        """One inference (see :meth:`aln.client.AlnClient._infer`)."""
        lease = await self._lease(arrays)
        try:
            placements = lease.placements if lease is not None else None
            inputs = _request.infer_inputs(aioclient, arrays, placements)
            requested = [aioclient.InferRequestedOutput(name) for name in outputs]
            attempts = self._attempts(timeout_s)
            registered_again = False
            while True:
                server_timeout_us, grpc_deadline_s = attempts.timeouts()
                try:
                    result = await self._client.infer(
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
                            await self._register(lease)
                        except InferenceServerException as again:
                            raise from_server_exception(again) from again
                        continue
                    await asyncio.sleep(attempts.failed(exc))
                    continue
                attempts.answered()
                return result
        finally:
            if lease is not None:
                await self._give_back(lease)

    async def _with_operating_point(self, prediction: Prediction) -> Prediction:
        """Attach the served model's operating point (see the blocking client)."""
        if prediction.model_version not in self._operating_points:
            try:
                config = await self._client.get_model_config(self.model_name, as_json=True)
            except InferenceServerException:
                config = None
            self._learn_operating_point(config, prediction.model_version)
        return self._attach_operating_point(prediction)

    async def _lease(self, arrays: dict[str, Any]) -> Lease | None:
        """Write the DICOM inputs into a region of their own (see the blocking client)."""
        if self._shared is None:
            return None
        lease = self._shared.lease(_request.shared_inputs(arrays))
        if lease is None or not lease.new:
            return lease
        try:
            if self._shared.reap_first():
                status = await self._client.get_system_shared_memory_status(as_json=True)
                for name in stale_regions(status.get("regions", {})):
                    await self._client.unregister_system_shared_memory(name)
                    unlink(name)
            await self._register(lease)
        except InferenceServerException as exc:
            self._shared.fall_back(lease, self.url, exc.message() or str(exc))
            return None
        return lease

    async def _register(self, lease: Lease) -> None:
        region = lease.region
        await self._client.register_system_shared_memory(region.name, region.key, region.size)

    async def _give_back(self, lease: Lease) -> None:
        assert self._shared is not None
        for retired in self._shared.finish(lease):
            await self._release(retired)

    async def _release(self, region: Region) -> None:
        assert self._shared is not None
        for wait in (*_request.UNREGISTER_BACKOFF_S, None):
            try:
                await self._client.unregister_system_shared_memory(region.name)
                break
            except InferenceServerException as exc:
                if wait is None or _request.unregister_failed_for_good(exc):
                    break  # server gone: unlink regardless
                await asyncio.sleep(wait)
        self._shared.pool.forget(region)

    async def predict_many(
        self,
        studies: Iterable[Study],
        *,
        concurrency: int = 8,
        timeout_s: float | None = None,
        return_exceptions: bool = False,
    ) -> list[Prediction | AlnClientError]:
        """Predict many studies, pipelined with up to ``concurrency`` in flight, in input order."""
        gate = asyncio.Semaphore(max(1, concurrency))

        async def one(study: Study) -> Prediction | AlnClientError:
            async with gate:
                try:
                    return await self.predict(
                        study.primary,
                        study.clinical,
                        auxiliary=study.auxiliary,
                        timeout_s=timeout_s,
                    )
                except AlnClientError as exc:
                    if return_exceptions:
                        return exc
                    raise

        return list(await asyncio.gather(*(one(s) for s in studies)))

    async def wait_until_ready(self, timeout_s: float = 120.0, poll_s: float = 0.5) -> None:
        """Wait until the server and the ensemble are ready (see the sync client)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                if await self._client.is_server_ready() and await self._client.is_model_ready(
                    self.model_name
                ):
                    return
            except InferenceServerException:
                pass
            await asyncio.sleep(poll_s)
        raise ModelUnavailableError(
            f"'{self.model_name}' at {self.url} was not ready within {timeout_s:.0f} s",
            "UNAVAILABLE",
        )

    async def server_metadata(self) -> dict[str, Any]:
        """Server and ensemble metadata (see the sync client)."""
        try:
            server = await self._client.get_server_metadata(as_json=True)
            model = await self._client.get_model_metadata(self.model_name, as_json=True)
        except InferenceServerException as exc:
            raise from_server_exception(exc) from exc
        return {"server": server, "model": model}
