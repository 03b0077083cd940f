"""Aggregators: read finished run folders, build tables, statistics and study reports (never recompute)."""
