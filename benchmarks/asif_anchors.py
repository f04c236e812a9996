"""ASIF accuracy against the number of anchors (the ASIF paper's main figure).

EfficientNet-Lite0 + all-MiniLM-L6-v2, `k=800`, `p=8`. The anchor pool is the
shipped preset's: the embedded corpus train + validation pairs (28,430 since corpus v2). For
each size `N`, `--seeds` random subsets of `N` anchors are drawn from the
pool (the full pool once), and each subset is scored on:

- zero-shot Animal-MNIST and Fashion-MNIST (fixed subsets of `--limit` test
  images), with bare class names as prompts and ASIF's best-single-prompt
  rule, and with CLIP's 80 templates averaged (what `keras-towers eval`
  does);
- image->text and text->image recall@1 and @10 on the 178 held-out Tux Paint
  test stamps (identical captions count as hits).

Features come from `benchmarks/asif_accuracy.py`'s cache (computed there on
first use, about 2 min), so the sweep itself takes seconds. Writes a PNG (mean
± std over the subsets) and a JSON next to it.

```
.venv/bin/python benchmarks/asif_anchors.py     # -> benchmarks/results/asif_anchors.{png,json}
.venv/bin/python benchmarks/asif_anchors.py --sizes 10,100,1000 --seeds 3 --output /tmp/a.png
```
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import asif_accuracy as accuracy  # noqa: E402
import numpy as np  # noqa: E402

from keras_towers.evaluation.templates import get_templates  # noqa: E402

DEFAULT_OUTPUT = os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "results", "asif_anchors.png"
)
#: (label, template set, class rule) of each zero-shot curve.
ZERO_SHOT_VARIANTS = (
    ("class names, best single", "none", "best_single"),
    ("80 CLIP templates, averaged", "openai", "average"),
)


def sweep(args) -> dict:
    start = time.perf_counter()
    model = accuracy.lite_minilm_asif("lite0")
    records = accuracy.corpus_records()
    image, text = accuracy.record_features(model, records)
    captions = np.array([r["caption"] for r in records], dtype=object)
    split = np.array([r["split"] for r in records])
    pool = np.flatnonzero(split != "test")
    test = np.flatnonzero(split == "test")
    sets = {}
    for name in accuracy.ZERO_SHOT_SETS:
        features, labels, class_names = accuracy.classification_features(
            model, name, args.limit
        )
        prompts = {
            t: accuracy.prompt_features(model, class_names, get_templates(t))
            for _, t, _ in ZERO_SHOT_VARIANTS
        }
        sets[name] = (features, labels, prompts)
    sizes = sorted({min(n, len(pool)) for n in args.sizes} | {len(pool)})
    rows = []
    for size in sizes:
        seeds = [0] if size == len(pool) else list(range(args.seeds))
        for seed in seeds:
            rng = np.random.default_rng(seed)
            chosen = np.sort(rng.choice(pool, size=size, replace=False))
            asif = accuracy.features_asif(
                image[chosen], text[chosen], list(captions[chosen]), args.k, args.p
            )
            row = {"num_anchors": int(size), "seed": seed}
            for name, (features, labels, prompts) in sets.items():
                for label, template_set, mode in ZERO_SHOT_VARIANTS:
                    n_templates = len(get_templates(template_set))
                    row[f"{name} ({label})"] = accuracy.zero_shot_accuracy(
                        asif, features, labels, prompts[template_set], n_templates, mode
                    )
            recalls = accuracy.retrieval(
                asif, image[test], text[test], list(captions[test])
            )
            for key in (
                "i2t_recall@1",
                "i2t_recall@10",
                "t2i_recall@1",
                "t2i_recall@10",
            ):
                row[f"tuxpaint {key}"] = recalls[key]
            rows.append(row)
        print(
            f"N={size:5d}: "
            + ", ".join(
                f"{key} {100 * np.mean([r[key] for r in rows if r['num_anchors'] == size]):.1f}%"
                for key in rows[-1]
                if key not in ("num_anchors", "seed")
            ),
            flush=True,
        )
    return {
        "config": {**vars(args), "pool": len(pool), "test_stamps": len(test)},
        "rows": rows,
        "seconds": time.perf_counter() - start,
    }


def summarize(rows: list[dict]) -> dict:
    """metric -> (sizes, mean, std) over the subsets of each size."""
    metrics = [k for k in rows[0] if k not in ("num_anchors", "seed")]
    sizes = sorted({r["num_anchors"] for r in rows})
    out = {}
    for metric in metrics:
        values = [[r[metric] for r in rows if r["num_anchors"] == n] for n in sizes]
        out[metric] = (
            np.array(sizes),
            np.array([np.mean(v) for v in values]),
            np.array([np.std(v) for v in values]),
        )
    return out


def plot(results: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary = summarize(results["rows"])
    config = results["config"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.8))
    styles = {"animal-mnist": "tab:orange", "fashion-mnist": "tab:blue"}
    for metric, (sizes, mean, std) in summary.items():
        if metric.startswith("tuxpaint"):
            continue
        name = metric.split(" ")[0]
        dashed = "averaged" in metric
        left.plot(
            sizes,
            100 * mean,
            marker="o",
            color=styles[name],
            linestyle="--" if dashed else "-",
            label=metric,
        )
        left.fill_between(
            sizes,
            100 * (mean - std),
            100 * (mean + std),
            color=styles[name],
            alpha=0.12,
        )
    left.axhline(10, color="grey", linewidth=1, linestyle=":", label="chance (10%)")
    left.set_title(f"Zero-shot top-1 ({config['limit']} test images per set)")
    left.set_ylabel("accuracy (%)")
    colors = {"i2t": "tab:green", "t2i": "tab:purple"}
    for metric, (sizes, mean, std) in summary.items():
        if not metric.startswith("tuxpaint"):
            continue
        key = metric.split(" ")[1]
        direction = key.split("_")[0]
        right.plot(
            sizes,
            100 * mean,
            marker="o",
            color=colors[direction],
            linestyle="-" if key.endswith("@10") else "--",
            label={"i2t": "image→text", "t2i": "text→image"}[direction]
            + f" R@{key.split('@')[1]}",
        )
        right.fill_between(
            sizes,
            100 * (mean - std),
            100 * (mean + std),
            color=colors[direction],
            alpha=0.12,
        )
    n_test = config["test_stamps"]
    right.axhline(
        100 * 10 / n_test, color="grey", linewidth=1, linestyle=":", label="chance R@10"
    )
    right.set_title(f"Retrieval on the {n_test} held-out Tux Paint stamps")
    right.set_ylabel("recall (%)")
    for ax in (left, right):
        ax.set_xscale("log")
        ax.set_xlabel("number of anchor pairs (random subsets of train + validation)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(
        f"ASIF, EfficientNet-Lite0 + all-MiniLM-L6-v2, k={config['k']}, p={config['p']:g} "
        f"(mean ± std over {config['seeds']} subsets; full pool {config['pool']})"
    )
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--sizes",
        type=lambda s: [int(x) for x in s.split(",")],
        default=[25, 50, 100, 200, 400, 800, 1600],
        help="comma-separated anchor counts (the full pool is always added)",
    )
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--k", type=int, default=800)
    parser.add_argument("--p", type=float, default=8.0)
    parser.add_argument(
        "--limit", type=int, default=2000, help="test images per zero-shot set"
    )
    parser.add_argument(
        "--output", default=DEFAULT_OUTPUT, help="PNG path (JSON beside it)"
    )
    args = parser.parse_args(argv)
    results = sweep(args)
    plot(results, args.output)
    json_path = os.path.splitext(args.output)[0] + ".json"
    with open(json_path, "w") as f:
        json.dump(results, f, indent=2)
    print(f"wrote {args.output} and {json_path} ({results['seconds']:.0f} s)")
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
