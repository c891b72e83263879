"""The ``lm`` domain (Hugging Face causal LMs merged tensor by tensor) and what it is made of:

* ``domain``: the ``lm`` domain itself (prompt, candidates through the sandbox, baselines);
* ``io``: safetensors model directories, architecture checks, shard writing;
* ``model``: the ``LMModel`` handle evaluators receive (and load with transformers);
* ``baselines``: Model Stock and SLERP, on top of the shared sweep of ``domains.baselines``.
"""
