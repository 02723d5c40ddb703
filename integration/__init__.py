"""A bidirectional Segment integration: Webhooks destination in, HTTP Tracking API out."""

__version__ = "0.1.0"
LIBRARY_NAME = "segment-integration"
