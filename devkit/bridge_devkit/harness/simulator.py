"""The Norce API simulator of a development run: in process (tests, demo) or as its own process
(benchmarks: it does not share the bridge's CPU), with a client of its admin API."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import IO, Any

import httpx
from norce_simulator import SimulatorConfig, SimulatorHandle, start_simulator

from bridge_devkit.harness.topics import API_KEY

MERCHANT, CHANNEL = "norce", "1"


@contextlib.asynccontextmanager
async def simulator(orders: int = 0, **cfg: Any) -> AsyncIterator[SimulatorHandle]:
    """An in-process simulator on a free port that accepts ``API_KEY`` (``cfg``: more config)."""
    cfg.setdefault("api_keys", (API_KEY,))
    cfg.setdefault("seed", 11)
    handle = await start_simulator(SimulatorConfig(orders=orders, **cfg), host="127.0.0.1", port=0)
    try:
        yield handle
    finally:
        await handle.aclose()


class SimulatorAdmin:
    """A client of the simulator's ``/__admin`` API (and of its order API, as a reader)."""

    def __init__(self, url: str, api_key: str) -> None:
        self.url = url.rstrip("/")
        self.api_key = api_key
        self.http = httpx.AsyncClient(
            base_url=self.url, timeout=60.0, limits=httpx.Limits(max_connections=32)
        )

    async def admin(self, method: str, path: str, body: Any = None) -> Any:
        """One admin call's JSON answer (None for an order that does not exist)."""
        resp = await self.http.request(method, f"/__admin{path}", json=body)
        if resp.status_code == 404 and path.startswith("/orders/"):
            return None
        resp.raise_for_status()
        return resp.json() if resp.content else None

    async def seed(self, count: int) -> list[str]:
        got = await self.admin(
            "POST", "/seed", {"count": count, "merchant": MERCHANT, "channel": CHANNEL}
        )
        ids: list[str] = got["ids"]
        return ids

    async def set_faults(self, **faults: Any) -> None:
        await self.admin("PUT", "/faults", faults)

    async def history(self, order_id: str) -> list[str]:
        got: list[str] = (await self.admin("GET", f"/history?order_id={order_id}"))["history"]
        return got

    async def calls(self, order_id: str | None = None) -> list[dict[str, Any]]:
        query = f"?order_id={order_id}" if order_id else ""
        got: list[dict[str, Any]] = (await self.admin("GET", f"/calls{query}"))["calls"]
        return got

    async def get_order(self, order_id: str) -> httpx.Response:
        """``GET`` of the order through the API, as a client of the bridge's outputs would."""
        return await self.http.get(
            f"/api/v0/checkout/orders/{order_id}",
            headers={
                "Authorization": f"Bearer {self.api_key}",
                "x-merchant": MERCHANT,
                "x-channel": CHANNEL,
            },
        )

    async def aclose(self) -> None:
        await self.http.aclose()


class SimulatorProcess(SimulatorAdmin):
    """``python -m norce_simulator`` in its own process; its log goes to ``log_path``."""

    def __init__(
        self, log_path: Path, *, api_key: str, seed: int, args: Sequence[str] = ()
    ) -> None:
        self._log: IO[bytes] = log_path.open("ab")
        argv = [sys.executable, "-m", "norce_simulator", "--host", "127.0.0.1", "--port", "0"]
        argv += ["--orders", "0", "--seed", str(seed), "--api-key", api_key, *args]
        self.proc = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=self._log, stdin=subprocess.DEVNULL
        )
        line = self.proc.stdout.readline() if self.proc.stdout is not None else b""
        if not line:
            self._log.close()
            raise RuntimeError(f"the simulator did not start (see {log_path})")
        super().__init__(json.loads(line)["url"], api_key)

    async def aclose(self) -> None:
        await super().aclose()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self._log.close()
