"""What the model-backed factories (``tiny``, ``hf``, ``vllm``) and their optimizers (``dpo``,
``sft``) share, by topic:

* ``checkpoints``: factory checkpoint directories, their ``selfdev_factory.json`` manifest, and
  loading them with transformers (full models or LoRA adapters);
* ``prompts``: how a domain prompt becomes the factory's context (``header``, ``chat`` or
  ``plain``), the same for sampling and for training;
* ``programs``: what a completion holds (the ``merge_models`` program, its static screen, its
  normalised-AST keys for novelty);
* ``sampling``: seeded, batch-invariant sampling from a local checkpoint;
* ``training``: the ``Trainer`` base of both optimizers (presets, policy set-up, trl
  arguments), and the DPO log-probability margin;
* ``threads``: how many torch threads factory work uses;
* ``options``: the options they share, declared once (sampling, prompt format, the trainers').

torch, transformers, trl and peft are imported inside the functions that need them.
"""
