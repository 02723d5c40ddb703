"""HTTP plumbing every route shares, and nothing of any domain: responses, bounded body reads,
the one error shape, middleware, the OpenAPI document, and the operations routes."""
