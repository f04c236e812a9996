"""Three Towers: train CLIP from scratch, aligned to a frozen pretrained tower.

Run it on any backend:

    KERAS_BACKEND=jax python guides/three_towers.py

Three Towers (3T, Kossen et al., 2023) trains an image tower `f` and a text
tower `g` contrastively, as CLIP does, and adds two more contrastive terms
that align each of them (through extra linear heads) to a frozen pretrained
image tower `h`. Unlike LiT, the main towers stay fully trainable; `h` only
teaches. `h` is never saved with the model: a preset references it by name.

To stay fast and offline, `h` here is the image tower of a tiny CLIP the guide
first trains on drawn shapes (`keras_towers.datasets.make_shapes`); the real
recipe uses the ImageNet EfficientNet-Lite0 (see the end). `GUIDE_EPOCHS`
(default 30) sets the training length; the test suite runs it with 2 epochs.
"""

import os
import tempfile

import numpy as np
import tensorflow as tf

import keras_towers

epochs = int(os.environ.get("GUIDE_EPOCHS", 30))
images, captions, _ = keras_towers.datasets.make_shapes(1024, seed=0)
pairs = {"images": images, "texts": captions}

# 1. A "pretrained" frozen tower h: the image tower of a tiny CLIP.
teacher = keras_towers.CLIP.tiny(image_size=32)
teacher.compile(learning_rate=2e-3, weight_decay=0.01)
teacher.fit(
    tf.data.Dataset.from_tensor_slices(pairs).shuffle(1024, seed=0).batch(64),
    epochs=epochs,
    verbose=0,
)

# 2. 3T: new f and g from scratch (the library's named "tiny" architecture),
#    h attached (locked, untracked). h reads its own image preprocessing
#    through `third_image_converter`.
parts = keras_towers.from_scratch.build("tiny", image_size=32, name_prefix="student_")
preprocessor = parts.preprocessor
preprocessor.third_image_converter = teacher.preprocessor.image_converter
# h is referenced by the name of a pretrained encoder (stored in the config
# instead of its weights). Register the teacher's backbone as one, pooled at
# its CLS token; a keras-hub backbone preset directory works too, unregistered.
keras_towers.pretrained.register_encoder(
    keras_towers.pretrained.Encoder(
        name="guide_shapes_teacher",
        modality="image",
        build_backbone=lambda name: teacher.image_tower.backbone,
        pooling="cls",
        output_dim=teacher.image_tower.feature_dim,
        short_name="teacher",
        image_size=32,
        preprocessing=lambda: teacher.preprocessor.image_converter,
        description="the guide's tiny CLIP image tower, trained on shapes",
    )
)
model = keras_towers.ThreeTowers(
    parts.image_tower,
    parts.text_tower,
    preprocessor,
    third_tower_source="guide_shapes_teacher",  # pooling: the encoder's own
)

# 3. h is frozen and needs no augmentation: compute its features once. The
#    cached dataset keeps the raw images and texts for f and g.
cached = keras_towers.cache_locked_features(model, pairs, batch_size=128)
print("cached keys:", sorted(cached.element_spec))  # images, texts, third_features
model.compile(learning_rate=2e-3, weight_decay=0.01)
history = model.fit(cached.shuffle(1024, seed=0).batch(64), epochs=epochs, verbose=2)
last = {k: v[-1] for k, v in history.history.items()}
print(
    "final losses: image-text {image_text_loss:.3f}, image-h {image_third_loss:.3f}, "
    "text-h {text_third_loss:.3f}".format(**last)
)

# 4. The preset stores f, g and the heads, not h. Reload (without h: it is
#    only needed to keep training) and classify new images zero-shot with f/g.
preset_dir = os.path.join(tempfile.mkdtemp(), "shapes_3t")
model.save_to_preset(preset_dir, description="3T on drawn shapes (guide)")
restored = keras_towers.ThreeTowers.from_preset(preset_dir)
print("reloaded with h:", restored.get_third_tower() is not None)
# To continue training, reload h from its reference as well:
resumable = keras_towers.ThreeTowers.from_preset(preset_dir, load_third_tower=True)
print("reloaded for training with h:", resumable.get_third_tower() is not None)
class_names = keras_towers.datasets.shape_class_names()
text_embeddings = restored.encode_texts([f"a {name}" for name in class_names])
test_images, _, test_labels = keras_towers.datasets.make_shapes(120, seed=1)
predicted = (restored.encode_images(test_images) @ text_embeddings.T).argmax(axis=1)
accuracy = float(np.mean(predicted == test_labels))
chance = 1 / len(class_names)
print(f"zero-shot accuracy on 120 new images: {accuracy:.1%} (chance {chance:.1%})")

# 5. The real thing: the `three-towers` recipe references the packaged
#    ImageNet EfficientNet-Lite0 as `third_tower_source=
#    "efficientnet_lite0_imagenet"` (224 px, its features cached once; see
#    `keras_towers.pretrained.names("image")` for the registered encoders):
#
#        keras-towers train --method three-towers --data embedded --epochs 20 \
#            --learning-rate 1e-3 --output runs/3t
#
#    or load the shipped one:
#    `keras_towers.ThreeTowers.from_preset("three_towers_lite0_embedded")`.
