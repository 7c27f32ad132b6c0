"""Thin entry points of the Beam jobs; the transforms live in onepiece.assembly."""
