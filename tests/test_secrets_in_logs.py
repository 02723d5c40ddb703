"""No secret ever reaches a log line: webhook keys (they sit in the URL path), write keys and
signing secrets, whatever the request did."""

from __future__ import annotations

import hashlib
import hmac

import httpx
import orjson

from tests import processes


async def test_server_logs_hold_no_key_or_secret(
    admin: httpx.AsyncClient, http: httpx.AsyncClient, server: processes.Process
) -> None:
    created = (await admin.post("/api/environments", json={"name": "logcheck-env"})).json()
    key, env = created["webhook_key"], created["id"]
    write_key, signing = "wk_log_check_0123456789", "signing-log-check-9876"
    patched = await admin.patch(
        f"/api/environments/{env}",
        json={
            "segment_write_key": write_key,
            "webhook_signing_secret": signing,
            "segment_api_url": "http://127.0.0.1:9",  # closed: nothing leaves this machine
        },
    )
    assert patched.status_code == 200
    body = orjson.dumps({"type": "track", "userId": "u", "event": "Logged"})
    signature = hmac.new(signing.encode(), body, hashlib.sha1).hexdigest()
    path = f"/webhooks/segment/{key}"
    assert (await http.post(path, content=body, headers={"X-Signature": signature})).is_success
    assert (
        await http.post(path, content=body, headers={"X-Signature": "0" * 40})
    ).status_code == 401
    assert (await http.post(path, content=b"not json")).status_code == 401  # unsigned
    await admin.post(f"/api/environments/{env}/test-connection")
    await admin.delete(f"/api/environments/{env}?force=true")

    logs = server.log_path.read_text(errors="replace")
    assert "POST /webhooks/segment/{webhook_key}" in logs, "requests are logged, by template"
    for secret in (key, write_key, signing, signature):
        assert secret not in logs
