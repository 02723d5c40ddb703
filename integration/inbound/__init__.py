"""Segment Webhooks destination: the webhook route and how each message lands in the store."""
