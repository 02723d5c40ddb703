"""The admin REST API under /api: bearer-token auth, one module per resource."""
