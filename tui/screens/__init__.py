"""Screens of the selfdev TUI."""
