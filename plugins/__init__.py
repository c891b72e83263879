"""Built-in plugins. Every module below this package that defines ``@hookimpl`` functions is
registered automatically (see ``engine.plugins.builtin_modules``), through the same hooks that
third-party plugins use."""
