"""Getting started with keras_towers: train, save, reload, classify zero-shot.

Run it on any backend:

    KERAS_BACKEND=jax python guides/getting_started.py

The data is procedurally drawn coloured shapes with captions
(`keras_towers.datasets.make_shapes`), so the guide needs no download. `GUIDE_EPOCHS` (default 30) sets the
training length; the test suite runs it with 2 epochs.
"""

import os
import tempfile

import numpy as np
import tensorflow as tf

import keras_towers

# 1. Build a small CLIP: ViT image tower, byte-level text transformer.
model = keras_towers.CLIP.tiny(image_size=32)
model.compile(learning_rate=2e-3, weight_decay=0.01)

# 2. Fit on a tf.data pipeline of raw images and strings: the model's
#    preprocessor (resize, normalise, tokenise) runs inside the pipeline.
images, captions, _ = keras_towers.datasets.make_shapes(1024, seed=0)
dataset = (
    tf.data.Dataset.from_tensor_slices({"images": images, "texts": captions})
    .shuffle(1024, seed=0)
    .batch(64, drop_remainder=True)
)
epochs = int(os.environ.get("GUIDE_EPOCHS", 30))
history = model.fit(dataset, epochs=epochs, verbose=2)

# 3. Save to a preset directory and load it back.
preset_dir = os.path.join(tempfile.mkdtemp(), "shapes_clip")
model.save_to_preset(preset_dir, description="CLIP on drawn shapes (guide)")
restored = keras_towers.CLIP.from_preset(preset_dir)
# `keras_towers.ContrastiveModel.from_preset(path_or_name)` loads any preset
# as the class it records (CLIP, LiT, ThreeTowers, ASIF, ...).

# 4. Zero-shot classification: embed one prompt per class, pick the closest.
class_names = keras_towers.datasets.shape_class_names()
text_embeddings = restored.encode_texts([f"a {name}" for name in class_names])
test_images, _, test_labels = keras_towers.datasets.make_shapes(120, seed=1)
image_embeddings = restored.encode_images(test_images)
predicted = (image_embeddings @ text_embeddings.T).argmax(axis=1)
accuracy = float(np.mean(predicted == test_labels))
for p, t in list(zip(predicted, test_labels, strict=True))[:5]:
    print(f"true: {class_names[t]:16s} predicted: {class_names[p]}")
chance = 1 / len(class_names)
print(f"zero-shot accuracy on 120 new images: {accuracy:.1%} (chance {chance:.1%})")
