"""Where an environment's events and write key may be sent: Segment's own hosts, or a host the
operator allowlisted (SEGMENT_API_ALLOWLIST). Anything else would let whoever holds the admin
token point the worker at an internal address, or at a host of theirs that collects the write
key in full, so the rule is checked when the URL is set and again before every request."""

from __future__ import annotations

from urllib.parse import urlsplit

from integration.store.models import US_SEGMENT_API

# Segment's Tracking API, US and EU workspaces: https only, the default port, no path.
SEGMENT_API_URLS = {"us": US_SEGMENT_API, "eu": "https://events.eu1.segmentapis.com"}
SEGMENT_HOSTS = frozenset(urlsplit(url).hostname or "" for url in SEGMENT_API_URLS.values())


class NotAllowed(ValueError):
    """The URL is malformed or names a host outside Segment's and the allowlist."""


def normalise(value: str, allowlist: frozenset[str]) -> str:
    """`us`, `eu`, or a URL of an allowed host, as the canonical `scheme://host[:port]`."""
    url = SEGMENT_API_URLS.get(value.lower(), value)
    if any(c.isspace() or c == "\x00" for c in url):
        raise NotAllowed("must not contain spaces or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:  # an unclosed IPv6 bracket, a port that is not a number
        raise NotAllowed("is not a URL") from None
    host = (parts.hostname or "").rstrip(".")
    if parts.scheme not in ("http", "https") or not host:
        raise NotAllowed("must be an http(s) URL, or 'us' or 'eu'")
    if parts.username is not None or parts.password is not None:
        raise NotAllowed("must not carry a user name or password")
    if parts.path not in ("", "/") or parts.query or parts.fragment or url.endswith(("?", "#")):
        raise NotAllowed("must be scheme://host[:port] only: no path, query or fragment")
    if host in SEGMENT_HOSTS:
        if parts.scheme != "https" or port not in (None, 443):
            raise NotAllowed(f"Segment's host {host} is reached over https on port 443 only")
        return f"https://{host}"
    if host not in allowlist:
        raise NotAllowed(
            f"host {host} is neither Segment's ({', '.join(sorted(SEGMENT_HOSTS))})"
            " nor in SEGMENT_API_ALLOWLIST"
        )
    netloc = f"[{host}]" if ":" in host else host
    return f"{parts.scheme}://{netloc}" + (f":{port}" if port is not None else "")


def allowed(url: str, allowlist: frozenset[str]) -> bool:
    """Whether a stored URL may still be used (the allowlist may have changed since)."""
    try:
        normalise(url, allowlist)
        return True
    except NotAllowed:
        return False


def not_allowed(api_url: str) -> str:
    """Why nothing is sent to a stored URL that `allowed` refuses: the worker's note on the held
    rows and the connection test's answer both say it."""
    return f"{api_url} is neither Segment's host nor in SEGMENT_API_ALLOWLIST"


def origin(url: str) -> tuple[str, str, int | None]:
    """Scheme, host and port: what decides who receives the write key."""
    parts = urlsplit(url)
    default = {"http": 80, "https": 443}.get(parts.scheme)
    return parts.scheme, (parts.hostname or ""), parts.port or default
