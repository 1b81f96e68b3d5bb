"""Figures, tables and reports written next to every result."""
