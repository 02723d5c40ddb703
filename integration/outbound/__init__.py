"""Segment source: publish product events into the outbox and deliver them to Segment."""
