"""Segment's mapping-kit and its subscription condition language, in Python.

A mapping (the JSON Segment's Destination Actions use: raw values and `@path`, `@template`,
`@if`, ... directives) is compiled once into closures, then applied to each message. A
trigger (`type = "track" and event = "Flow Started"`) is parsed once, then matched. Both
refuse a bad definition with `InvalidMapping`, which names where it is wrong; applying a
mapping to a message it cannot handle raises `MappingFailed`, which names the field.

Behaviour follows segmentio/action-destinations (packages/core/src/mapping-kit and
packages/destination-subscriptions), re-implemented from what they do; the README's
"Mappings (mapping-kit)" section lists what is supported and where this one is stricter.
"""

from __future__ import annotations

from integration.mapping.compiler import CompiledMapping, compile_mapping
from integration.mapping.conditions import Condition, parse_condition
from integration.mapping.directives import SUPPORTED_DIRECTIVES
from integration.mapping.errors import InvalidMapping, MappingFailed, Problem

__all__ = [
    "SUPPORTED_DIRECTIVES",
    "CompiledMapping",
    "Condition",
    "InvalidMapping",
    "MappingFailed",
    "Problem",
    "compile_mapping",
    "parse_condition",
]
