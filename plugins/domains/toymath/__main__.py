"""``python -m selfdev.plugins.domains.toymath``: build the toymath family, print its paths and
timings."""
from selfdev.plugins.domains.toymath.family import main

main()
