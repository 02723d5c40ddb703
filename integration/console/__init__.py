"""The browser console under /admin: server-rendered pages over the same services as the REST
API, behind a signed session cookie."""
