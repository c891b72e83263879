"""Built-in listeners."""
