"""CLIP from scratch vs LiT vs Three Towers, on the same data and budget.

A miniature of the comparison in the LiT and 3T papers: each method is trained
by `keras-towers train` (its recipe in `keras_towers.recipes`) on the embedded
corpus train split with the same epochs, batch size, learning rate, schedule
and seed (so the same batches in the same order), then evaluated with
`keras_towers.tasks` on zero-shot Animal-MNIST and Fashion-MNIST and on
image<->text retrieval over the 178 held-out Tux Paint stamps. The papers
claim LiT >> scratch on zero-shot classification and 3T >= LiT on retrieval.

Every run is a preset directory under `--output-dir`; a method whose directory
already holds a finished preset is evaluated, not retrained (delete it to
retrain).

Usage (the numbers in the README):

```bash
.venv/bin/keras-towers data prepare
KERAS_BACKEND=tensorflow .venv/bin/python benchmarks/lit_3t_comparison.py \
    --epochs 20 --limit 1000 --output-dir runs/lit_3t_comparison
```

Quick smoke run: `--epochs 1 --limit 200 --methods lit`. The work is done by
`benchmarks/compare_methods.py` (any recipes, linear probe); this script fixes
its method list and output folder.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import compare_methods  # noqa: E402

METHODS = ("clip", "lit", "lit-minilm", "three-towers")


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not any(a.startswith("--output-dir") for a in argv):
        argv += ["--output-dir", "runs/lit_3t_comparison"]
    return compare_methods.main(argv, default_methods=METHODS)


if __name__ == "__main__":
    sys.exit(main())
