"""Getting started with keras_towers: train, save, reload, classify zero-shot.

Run it on any backend:

    KERAS_BACKEND=jax python guides/getting_started.py

The data is a tiny procedurally drawn set of coloured shapes with captions,
so the guide needs no download. `GUIDE_EPOCHS` (default 30) sets the
training length; the test suite runs it with 2 epochs.
"""

import os
import tempfile

import numpy as np
import tensorflow as tf

import keras_towers

COLOURS = {"red": (220, 40, 40), "green": (40, 180, 60), "blue": (40, 70, 220)}
SHAPES = ("square", "circle")


def draw(shape: str, colour: str, rng, size: int = 32) -> np.ndarray:
    """One uint8 image: a coloured shape on a light, noisy background."""
    image = rng.integers(200, 256, (size, size, 3)).astype("uint8")
    radius = rng.integers(6, 11)
    cy, cx = rng.integers(radius, size - radius, 2)
    yy, xx = np.mgrid[:size, :size]
    if shape == "square":
        mask = (abs(yy - cy) <= radius) & (abs(xx - cx) <= radius)
    else:
        mask = (yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2
    image[mask] = COLOURS[colour]
    return image


def make_pairs(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    images, captions = [], []
    for _ in range(n):
        shape, colour = SHAPES[rng.integers(2)], list(COLOURS)[rng.integers(3)]
        images.append(draw(shape, colour, rng))
        captions.append(f"a {colour} {shape}")
    return np.stack(images), captions


# 1. Build a small CLIP: ViT image tower, byte-level text transformer.
model = keras_towers.CLIP.tiny(image_size=32)
model.compile(learning_rate=2e-3, weight_decay=0.01)

# 2. Fit on a tf.data pipeline of raw images and strings: the model's
#    preprocessor (resize, normalise, tokenise) runs inside the pipeline.
images, captions = make_pairs(512)
dataset = (
    tf.data.Dataset.from_tensor_slices({"images": images, "texts": captions})
    .shuffle(512, seed=0)
    .batch(64, drop_remainder=True)
)
epochs = int(os.environ.get("GUIDE_EPOCHS", 30))
history = model.fit(dataset, epochs=epochs, verbose=2)

# 3. Save to a preset directory and load it back.
preset_dir = os.path.join(tempfile.mkdtemp(), "shapes_clip")
model.save_to_preset(preset_dir, description="CLIP on drawn shapes (guide)")
restored = keras_towers.CLIP.from_preset(preset_dir)

# 4. Zero-shot classification: embed one prompt per class, pick the closest.
class_names = [f"{c} {s}" for c in COLOURS for s in SHAPES]
text_embeddings = restored.encode_texts([f"a {name}" for name in class_names])
test_images, test_captions = make_pairs(60, seed=1)
image_embeddings = restored.encode_images(test_images)
scores = image_embeddings @ text_embeddings.T
predicted = [class_names[i] for i in scores.argmax(axis=1)]
truth = [caption[2:] for caption in test_captions]
accuracy = float(np.mean([p == t for p, t in zip(predicted, truth, strict=True)]))
for p, t in list(zip(predicted, truth, strict=True))[:5]:
    print(f"true: {t:14s} predicted: {p}")
print(f"zero-shot accuracy on 60 new images: {accuracy:.1%} (chance {1 / 6:.1%})")
