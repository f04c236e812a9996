"""LiT: tune a text tower against a locked, pretrained image tower.

Run it on any backend:

    KERAS_BACKEND=jax python guides/lit.py

LiT ("locked-image tuning", Zhai et al., 2022) keeps a pretrained image tower
frozen and trains only a text tower (and the temperature) to match it. Because
the locked tower gives the same output in every epoch, its features are
computed once with `keras_towers.cache_locked_features`.

To stay fast and offline, the "pretrained" image tower here is a tiny ViT that
the guide first trains as part of a CLIP on drawn shapes
(`keras_towers.datasets.make_shapes`); the real recipe locks the ImageNet
EfficientNet-Lite0 instead (see the end). `GUIDE_EPOCHS` (default 30) sets
the training length; the test suite runs it with 2 epochs.
"""

import os
import tempfile

import keras
import numpy as np
import tensorflow as tf

import keras_towers

epochs = int(os.environ.get("GUIDE_EPOCHS", 30))
images, captions, _ = keras_towers.datasets.make_shapes(1024, seed=0)
pairs = {"images": images, "texts": captions}

# 1. A "pretrained" image tower: the image tower of a tiny CLIP trained on
#    the shapes (in practice, any pretrained ImageTower or image backbone).
clip = keras_towers.CLIP.tiny(image_size=32)
clip.compile(learning_rate=2e-3, weight_decay=0.01)
clip.fit(
    tf.data.Dataset.from_tensor_slices(pairs).shuffle(1024, seed=0).batch(64),
    epochs=epochs,
    verbose=0,
)
image_tower = clip.image_tower

# 2. LiT "Lu": that image tower Locked, a new text tower trained from scratch
#    ("u"). The locked tower's weights will not change during `fit`.
#    The text tower is the library's named "tiny" from-scratch transformer
#    (`keras_towers.from_scratch.CONFIGS`), over the CLIP's tokenizer.
text_tower = keras_towers.from_scratch.text_tower(
    "tiny",
    clip.preprocessor,
    projection_dim=image_tower.output_dim,
    name="lit_text_tower",
)
model = keras_towers.LiT(image_tower, text_tower, clip.preprocessor, variant="Lu")
locked_before = [keras.ops.convert_to_numpy(w) for w in model.image_tower.weights]

# 3. Run the locked tower once over the data, then train on its features.
cached = keras_towers.cache_locked_features(model, pairs, batch_size=128)
print("cached keys:", sorted(cached.element_spec))  # image_features + texts
model.compile(learning_rate=2e-3, weight_decay=0.01)
model.fit(cached.shuffle(1024, seed=0).batch(64), epochs=epochs, verbose=2)
unchanged = all(
    np.array_equal(a, keras.ops.convert_to_numpy(b))
    for a, b in zip(locked_before, model.image_tower.weights, strict=True)
)
print(f"locked image tower unchanged by fit: {unchanged}")

# 4. Save, reload and classify new images zero-shot.
preset_dir = os.path.join(tempfile.mkdtemp(), "shapes_lit")
model.save_to_preset(preset_dir, description="LiT on drawn shapes (guide)")
restored = keras_towers.LiT.from_preset(preset_dir)
class_names = keras_towers.datasets.shape_class_names()
text_embeddings = restored.encode_texts([f"a {name}" for name in class_names])
test_images, _, test_labels = keras_towers.datasets.make_shapes(120, seed=1)
predicted = (restored.encode_images(test_images) @ text_embeddings.T).argmax(axis=1)
accuracy = float(np.mean(predicted == test_labels))
chance = 1 / len(class_names)
print(f"zero-shot accuracy on 120 new images: {accuracy:.1%} (chance {chance:.1%})")

# 5. The real thing: the `lit` recipe locks the packaged ImageNet
#    EfficientNet-Lite0, referenced by the name of a pretrained encoder
#    (`image_tower_source="efficientnet_lite0_imagenet"`; see
#    `keras_towers.pretrained.names()`), so a saved LiT preset stores only the
#    text tower; without a `preprocessor`, LiT then uses that encoder's own
#    image preprocessing. Train it on the embedded corpus with
#
#        keras-towers train --method lit --data embedded --epochs 20 \
#            --learning-rate 1e-3 --output runs/lit
#
#    or load the shipped one: `keras_towers.LiT.from_preset("lit_lite0_embedded")`.
#
#    A text tower trained from scratch on ~2k captions never learns the words
#    of new classes, so that preset stays near chance on zero-shot sets. The
#    `lit-minilm` recipe locks the pretrained all-MiniLM-L6-v2 text backbone
#    too (`text_tower_source="all_minilm_l6_v2"`, referenced, not stored)
#    and trains only a linear text head into the frozen image space:
#
#        keras-towers train --method lit-minilm --data embedded --epochs 20 \
#            --learning-rate 1e-3 --output runs/lit_minilm
#
#    shipped as `keras_towers.LiT.from_preset("lit_lite0_minilm_embedded")`
#    (Fashion-MNIST zero-shot 20% against 7%; see its card).
