"""``toymath``: GSM8k-format arithmetic word problems and a tiny Llama family built on CPU.

The family (tiny-domains.md §3, recipe w1, measured there: seed 75.5, experts 78.5/71.0, best
merges 89-91 on dev): a closed-vocabulary tokenizer built with ``tokenizers`` (one token per
digit, words with their leading space, exactly invertible), a Llama seed (hidden 256, 2 layers,
2.1M parameters) trained 400 steps on A:B:C = 1:1:1 and one expert per family fine-tuned 200
steps at lr 2e-4 from it. Everything is deterministic and cached as ordinary HF directories under
``$SELFDEV_HOME/cache/toymath/seed-<hash>/`` (``seed/``, ``data/{train,dev,test}.jsonl`` and
``experts-<hash>/<family>/``), so the ``toymath`` domain is just the ``lm`` domain pointed at them.

* ``problems``: the problem families (GSM8k format) and the data files;
* ``tokenizer``: the closed-vocabulary tokenizer;
* ``training``: training the seed and the experts (one job per model);
* ``jobs``: running jobs here or in worker processes;
* ``family``: the recipes and the cached family (seed, data, experts);
* ``domain``: the ``toymath`` domain.

``python -m selfdev.plugins.domains.toymath --size full`` builds the family and prints the
timings.
"""
