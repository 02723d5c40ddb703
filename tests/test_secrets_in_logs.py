"""No secret ever reaches a log line: webhook keys (they sit in the URL path), write keys,
signing secrets and source write keys (in an Authorization header or a body), whatever the
request did."""

from __future__ import annotations

import base64
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
    # The intake: its key in a Basic header, in a body, wrong, and rotated.
    source = created["source_write_key"]
    header = "Basic " + base64.b64encode(f"{source}:".encode()).decode()
    call = {"userId": "u", "event": "Logged"}
    assert (await http.post("/v1/track", json=call, headers={"Authorization": header})).is_success
    assert (await http.post("/v1/track", json={**call, "writeKey": source})).is_success
    wrong = "Basic " + base64.b64encode(f"{source}x:".encode()).decode()
    refused = await http.post("/v1/track", json=call, headers={"Authorization": wrong})
    assert refused.status_code == 401
    rotated = await admin.post(f"/api/environments/{env}/rotate-source-write-key")
    new_source = rotated.json()["source_write_key"]
    await admin.delete(f"/api/environments/{env}?force=true")

    logs = server.log_path.read_text(errors="replace")
    assert "POST /webhooks/segment/{webhook_key}" in logs, "requests are logged, by template"
    assert "POST /v1/track" in logs
    for secret in (key, write_key, signing, signature, source, header, wrong, new_source):
        assert secret not in logs
        assert secret.split(" ")[-1] not in logs
