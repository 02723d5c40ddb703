"""The Segment-compatible intake: Segment's HTTP Tracking API (`/v1/track`, `/v1/batch`, ...)
served for each environment, so that any Segment library or tool can publish through us.

A call authenticates with the environment's source write key (HTTP Basic user name, or
`writeKey` in the body, as Segment accepts), and its messages go the way `publish()`'s do: the
same validation and normalisation, the same outbox, the same stream switch. What differs is
what Segment's own edge does to a message before it is stored, done here instead (edge.py).

    routes.py    the /v1 paths and the CORS preflight, in Segment's answer shapes
    service.py   a call: authenticate, read, parse, validate, publish, under one deadline
    call.py      what a call is: its key, its body's messages and envelope, Segment's limits
    edge.py      each message as Segment's edge would make it
    answers.py   what a call is answered: Segment's shapes, CORS headers
"""
