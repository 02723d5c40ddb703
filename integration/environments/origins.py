"""Browser origins an environment lets call its /v1 intake (CORS), as browsers write them.

A browser's `Origin` header is `scheme://host[:port]`, lower case, with the port only when it is
not the scheme's default. Settings are normalised to that form when they are made, so that
matching a request is one exact comparison: no pattern, no suffix rule for a crafted host
(`https://example.com.evil.test`) to slip through.
"""

from __future__ import annotations

from urllib.parse import urlsplit

MAX_ORIGINS = 50
MAX_ORIGIN_CHARS = 255
DEFAULT_PORTS = {"http": 80, "https": 443}


class NotAnOrigin(ValueError):
    """The value is not a `scheme://host[:port]` origin."""


def normalise(value: str) -> str:
    """The origin as a browser sends it, or NotAnOrigin saying why it is not one."""
    if not value.isascii() or any(c.isspace() or not c.isprintable() for c in value):
        raise NotAnOrigin("must be ASCII without spaces (write an IDN host in punycode)")
    if len(value) > MAX_ORIGIN_CHARS:
        raise NotAnOrigin(f"must be at most {MAX_ORIGIN_CHARS} characters")
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError:  # an unclosed IPv6 bracket, a port that is not a number
        raise NotAnOrigin("is not a URL") from None
    scheme, host = parts.scheme.lower(), (parts.hostname or "")
    if scheme not in DEFAULT_PORTS or not host:
        raise NotAnOrigin("must be http(s)://host[:port]")
    if parts.username is not None or parts.password is not None:
        raise NotAnOrigin("must not carry a user name or password")
    if parts.path or parts.query or parts.fragment or value.endswith(("?", "#")):
        raise NotAnOrigin("must be scheme://host[:port] only: no path, not even '/'")
    netloc = f"[{host}]" if ":" in host else host
    if port is not None and port != DEFAULT_PORTS[scheme]:
        netloc += f":{port}"
    return f"{scheme}://{netloc}"


def normalise_all(values: list[str]) -> list[str]:
    """A setting's list of origins, normalised, duplicates dropped, in the order given."""
    if len(values) > MAX_ORIGINS:
        raise NotAnOrigin(f"at most {MAX_ORIGINS} origins")
    return list(dict.fromkeys(normalise(v) for v in values))


def allowed(origin: str, origins: list[str]) -> bool:
    """Whether a request's Origin header names one of `origins` (normalised ones)."""
    try:
        return normalise(origin) in origins
    except NotAnOrigin:
        return False
