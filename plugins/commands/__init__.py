"""The CLI commands the built-in plugins add (``register_commands``): ``apply``, ``prompt``,
``factory stats``."""
