"""Evaluate and train on your own image-text data.

Run it on any backend:

    KERAS_BACKEND=jax python guides/evaluate_and_train_on_your_data.py

What it shows:

1. Your data as a folder of images + a CSV of (image, caption) — the same
   readers take JSONL, TFRecord and WebDataset `.tar` shards
   (`keras_towers.datasets.load_pairs`). A broken file is skipped, named in a
   warning and counted, unless you ask for `on_error="raise"`.
2. Training CLIP on it with `fit` on tf.data.
3. Evaluating any model with `encode_images` / `encode_texts`: zero-shot
   classification with a prompt-template ensemble, retrieval recall@k, and a
   linear probe — on your data and on the offline evaluation sets.

"Your data" here is drawn shapes written to PNG files, so the guide needs no
download. `GUIDE_EPOCHS` (default 30) sets the training length; the test suite
runs it with 2 epochs. The same steps from the shell are `keras-towers train
--data my_pairs.csv ...` and `keras-towers eval --task retrieval:my_pairs.csv`.
"""

import csv
import os
import tempfile
import warnings

import keras
from PIL import Image

import keras_towers
from keras_towers import evaluation
from keras_towers.datasets import make_shapes

keras.utils.set_random_seed(0)
folder = tempfile.mkdtemp(prefix="my_pairs_")

# 1. Write "your" data: PNG files and a CSV with a header row. Relative paths
#    are resolved against the CSV's folder. One file is broken on purpose.
images, captions, labels = make_shapes(1200, seed=0)
with open(os.path.join(folder, "pairs.csv"), "w", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(["image", "caption"])
    for i, (image, caption) in enumerate(zip(images, captions, strict=True)):
        Image.fromarray(image).save(os.path.join(folder, f"{i}.png"))
        writer.writerow([f"{i}.png", caption])
    with open(os.path.join(folder, "broken.png"), "wb") as broken:
        broken.write(b"not a png")
    writer.writerow(["broken.png", "a file that is not an image"])

# 2. Read it into tf.data. Elements are {"images": uint8 (H, W, 3), "texts"}.
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    pairs = keras_towers.datasets.from_csv(os.path.join(folder, "pairs.csv"))
    count = sum(1 for _ in pairs)
print(f"read {count} pairs; {pairs.decode_report.summary()}")
for warning in caught[:1]:
    print("warning:", warning.message)

# 3. Train: hold out the last 200 pairs, batch at the model's image size.
train = pairs.take(1000)
held_out = pairs.skip(1000)
model = keras_towers.CLIP.tiny(image_size=32, config="tiny_text64")
model.compile(learning_rate=2e-3, weight_decay=0.01)
dataset = keras_towers.datasets.batch_pairs(
    train,
    batch_size=64,
    image_size=32,
    shuffle_buffer=1000,
    seed=0,
    drop_remainder=True,
)
epochs = int(os.environ.get("GUIDE_EPOCHS", 30))
model.fit(dataset, epochs=epochs, verbose=2)

# 4a. Retrieval on the held-out pairs: recall@1/5/10 in both directions.
retrieval = evaluation.evaluate_retrieval(model, held_out, verbose=0)
print(
    "retrieval on 200 held-out pairs: "
    f"image->text R@1 {retrieval['image_to_text_recall@1']:.1%}, "
    f"R@10 {retrieval['image_to_text_recall@10']:.1%}; "
    f"text->image R@10 {retrieval['text_to_image_recall@10']:.1%} (chance R@10 5%)"
)

# 4b. Zero-shot classification with a template ensemble: each prompt is
#     embedded and normalised, prompts are averaged per class, renormalised.
class_names = keras_towers.datasets.shape_class_names()
test_images, _, test_labels = make_shapes(300, seed=1)
zero_shot = evaluation.evaluate_zero_shot(
    model,
    test_images,
    test_labels,
    class_names,
    templates=["a {}", "a small {}", "a large {}"],
    verbose=0,
)
print(
    f"zero-shot accuracy on 300 new images: {zero_shot['accuracy']:.1%} "
    f"(chance {zero_shot['chance']:.1%})"
)

# 4c. Linear probe: logistic regression on frozen image features, the
#     regularisation chosen on a validation split of the training images.
probe = evaluation.linear_probe(
    model, images[:1000], labels[:1000], test_images, test_labels
)
print(f"linear probe accuracy: {probe['accuracy']:.1%} (C={probe['best_C']:g})")

# 4d. Per-image ranked labels, as `keras-towers zero-shot` prints them.
for label, probability in evaluation.classify(
    model, test_images[:1], class_names, templates="simple", top_k=3
)[0]:
    print(f"  {probability:6.1%}  {label}")

# 5. The same evaluation on real, offline data (after `keras-towers data
#    prepare`): a shipped preset on held-out Tux Paint stamps.
try:
    result = keras_towers.tasks.run(
        keras_towers.CLIP.from_preset("shapes_clip_tiny"),
        "retrieval:tuxpaint",
        verbose=0,
    )
    recall = result["metrics"]["image_to_text_recall@10"]
    print(f"shapes_clip_tiny on Tux Paint test: image->text R@10 {recall:.1%}")
except keras_towers.datasets.MissingDataError as error:
    print(f"(skipping the real-data example: {error})")
