"""Built-in plugins, registered through the same hooks that third-party plugins use.

``selfdev.engine.plugins.DEFAULT_PLUGINS`` names every built-in module; nothing here is found by
scanning. Plugins import the public door (``import selfdev``) and nothing deeper in the engine.
"""
