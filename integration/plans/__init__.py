"""Tracking plans: per environment and direction, the events a message may be and the
properties each may carry (a subset of JSON Schema), and what becomes of a message that does
not fit: allowed, stripped of what does not fit and kept whole in quarantine, or held whole.

`document` validates a plan, `patterns` compiles its regular expressions safely, `check`
compiles a plan once and judges messages against it, `draft` writes a plan from samples; the
rest (`service`, `quarantine`) keeps plans and quarantined messages in Postgres.
"""
