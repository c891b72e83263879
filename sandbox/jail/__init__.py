"""The jail side of the sandbox: code that runs inside the jailed processes.

Everything in this package runs in the warm parent or in a candidate's child, never in the
engine: ``worker`` (the warm parent's loop and the per-candidate child), ``facade`` (L2: the
torch/math facades and RestrictedPython guards the candidate sees) and ``oslayers`` (L3:
namespaces, rlimits, Landlock, seccomp; also run stand-alone by ``selfdev sandbox doctor``).

It assumes hostile company: the candidate shares its process, so nothing here holds a
secret, and nothing it sends back is believed by the trusted side (``sandbox/verdict.py``
validates every field). Of selfdev it imports only :mod:`selfdev.sandbox.protocol`, the wire
format shared with the trusted side (``tests/sandbox/test_sandbox_layout.py`` checks this).
"""
