"""Tables, engine and sessions: everything that knows the database and nothing of HTTP."""
