"""ASIF: a vision-language model from two frozen encoders and some pairs.

ASIF (Norelli et al., 2023) trains nothing. It takes a pretrained image
encoder, a pretrained text encoder and a set of image-caption *anchor* pairs,
and represents an image by its similarity to the anchor images and a text by
its similarity to the anchor captions. Anchor `n` is the same pair on both
sides, so the two vectors can be compared: an image and a caption match when
they resemble the same anchors.

This guide uses EfficientNet-Lite0 (ImageNet) and all-MiniLM-L6-v2, both
installed offline by `scripts/setup.sh`, and the embedded corpus prepared by
`keras-towers data prepare`:

    KERAS_BACKEND=tensorflow python guides/asif.py

`GUIDE_ANCHORS` (default: all 28,430 train + validation pairs) and
`GUIDE_QUERIES` (default 500 zero-shot images, 178 retrieval stamps) set the
sizes; the test suite runs it with a few dozen of each.
"""

import os
import tempfile
import time

import numpy as np

import keras_towers
from keras_towers import evaluation
from keras_towers import tasks

num_anchors = int(os.environ.get("GUIDE_ANCHORS", 0)) or None
num_queries = int(os.environ.get("GUIDE_QUERIES", 0)) or None

# 1. An ASIF with no anchors yet. The towers are pretrained encoders
#    referenced by name (`keras_towers.pretrained.names()`): a saved preset
#    stores only the anchors, never the encoders' weights. k is how many
#    anchors each representation keeps, p sharpens their similarities.
model = keras_towers.ASIF.from_encoders(
    "efficientnet_lite0_imagenet",
    "all_minilm_l6_v2",
    k=800,
    p=8.0,
    anchor_dtype="float16",
)

# 2. Anchors: image-caption pairs, here the corpus train + validation splits
#    (the Tux Paint test split stays unseen for retrieval below). Each pair
#    keeps a reference to its image (the corpus id) for explanations.
records = keras_towers.datasets.embedded_records("train")
records += keras_towers.datasets.embedded_records("validation")
if num_anchors:
    keep = np.random.default_rng(0).permutation(len(records))[:num_anchors]
    records = [records[i] for i in sorted(keep)]
pairs = keras_towers.datasets.from_records(records, extra_keys=["id"]).map(
    lambda e: {"images": e["images"], "texts": e["texts"], "image_refs": e["id"]}
)
start = time.perf_counter()
model.add_anchors(pairs=pairs)
print(f"encoded {model.num_anchors} anchors in {time.perf_counter() - start:.1f} s")
# (The same anchors ship ready-made: `ASIF.from_preset("asif_lite0_minilm_embedded")`.)

# 3. Zero-shot classification. `encode_images` / `encode_texts` return
#    relative representations (N anchors wide, unit norm), so the library's
#    evaluation works unchanged. ASIF's own rule scores each class by its
#    best single prompt (`zero_shot_scores(mode="best_single")`).
images, labels, class_names = keras_towers.datasets.load_classification(
    "fashion-mnist", split="test"
)
images, labels = images[: num_queries or 500, ..., None], labels[: num_queries or 500]
result = evaluation.evaluate_zero_shot(
    model, images, labels, class_names, templates="none", verbose=0
)
scores = model.zero_shot_scores(
    images, class_names, templates=["{}", "a photo of a {}."], mode="best_single"
)
best_single = float(np.mean(scores.argmax(axis=1) == labels))
print(
    f"Fashion-MNIST zero-shot accuracy on {len(labels)} images: "
    f"{result['accuracy']:.1%} (class names), {best_single:.1%} (best of two "
    f"prompts per class); chance {result['chance']:.0%}"
)

# 4. Retrieval on held-out Tux Paint stamps (never anchors).
stamps, captions = tasks.retrieval_pairs("tuxpaint", limit=num_queries)
retrieval = evaluation.evaluate_retrieval(model, stamps, captions, verbose=0)
print(
    f"Tux Paint retrieval over {len(captions)} held-out stamps: image->text "
    f"R@1 {retrieval['image_to_text_recall@1']:.1%}, "
    f"R@10 {retrieval['image_to_text_recall@10']:.1%}"
)

# 5. Explanations: the score of an image and a caption is a sum over the
#    anchors both of them resemble; each term is one anchor pair.
print(f"why does stamp 0 match {captions[0]!r}?")
for item in model.explain(stamps[0], captions[0], top_n=3):
    print(
        f"  {item['contribution']:.3f} from anchor {item['caption']!r} "
        f"({item['image_ref']})"
    )

# 6. Changing what the model knows takes milliseconds once features exist:
#    add pairs (raw, or as features), remove them by id, position or rule.
#    Representations depend on the anchors, so recompute them afterwards.
emoji_ids = model.remove_anchors(
    where=lambda a: a.image_ref.startswith("emoji-google:")
)
print(f"removed {len(emoji_ids)} Google emoji anchors -> {model.num_anchors} left")
if model.num_anchors:
    without = evaluation.evaluate_retrieval(model, stamps, captions, verbose=0)
    print(
        "  retrieval R@10 without the Google emoji anchors: "
        f"{without['image_to_text_recall@10']:.1%}"
    )
new_ids = model.add_anchors(
    images=[stamps[0]], texts=[captions[0]], image_refs=["my_stamp.png"]
)
print(f"added anchor {new_ids[0]} ({captions[0]!r}) -> {model.num_anchors} anchors")
model.remove_anchors(ids=new_ids)

# 7. Save and load: anchors (float16 here, through Keras saving), k, p and
#    the encoder names; the sha256 of every file is checked on load.
preset_dir = os.path.join(tempfile.mkdtemp(), "my_asif")
model.save_to_preset(preset_dir, description="ASIF guide")
size = sum(
    os.path.getsize(os.path.join(root, f))
    for root, _, files in os.walk(preset_dir)
    for f in files
)
restored = keras_towers.ASIF.from_preset(preset_dir)
same = np.allclose(
    restored.encode_texts(captions[:4]), model.encode_texts(captions[:4]), atol=1e-6
)
print(
    f"saved {restored.num_anchors} anchors in {size / 2**20:.1f} MB; "
    f"reloaded representations identical: {same}"
)
