"""The server comes up against real Postgres and Redis and answers its health checks."""

from __future__ import annotations

import httpx


async def test_healthz_and_readyz(http: httpx.AsyncClient) -> None:
    assert (await http.get("/healthz")).json()["status"] == "ok"
    ready = await http.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"postgres": "ok", "redis": "ok"}


async def test_api_requires_admin_token(http: httpx.AsyncClient) -> None:
    response = await http.get("/api/environments")
    assert response.status_code == 401
    assert response.json()["error"] == "unauthorized"
    wrong = await http.get("/api/environments", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401
