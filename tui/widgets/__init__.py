"""Widgets of the selfdev TUI."""
