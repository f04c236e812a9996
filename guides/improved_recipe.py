"""The improved CLIP recipe (Fini et al., "clip-rocket") and its SSL add-ons.

Run it on any backend:

    KERAS_BACKEND=jax python guides/improved_recipe.py

The recipe keeps CLIP's towers and adds, per training pair, a weakly
augmented *global* view and two strongly augmented views of each modality
(SimCLR-style image crops/colour/blur/solarize; captions with stopwords
removed and one EDA edit: a WordNet synonym, a swap or a deletion). The
global pair goes through the towers' linear heads ("z", CLIP's InfoNCE); every
(image view, caption view) pair goes through separate BN-MLP heads ("h")
with their own temperature and a label-smoothed InfoNCE. An optional SSL
add-on aligns the views further: SiamLIP (a cross-modal predictor against a
stop-gradient target), BYOLIP (the target an EMA copy), BarLIP (Barlow
Twins' cross-correlation) or SwALIP (swapped Sinkhorn cluster assignments).

Views are built inside `tf.data` by pure functions of `(seed, epoch,
index)`, so they are the same on every backend and a resumed run sees the
same batches. Everything here is offline and small: drawn shapes
(`keras_towers.datasets.make_shapes`) and `CLIPRocket.tiny()`'s towers.
`GUIDE_EPOCHS` (default 10) sets the number of epochs; the test suite runs it
with 2.
"""

import os
import tempfile

import keras
import numpy as np

import keras_towers
from keras_towers import augment

keras.utils.set_random_seed(0)
epochs = int(os.environ.get("GUIDE_EPOCHS", 10))
images, captions, _ = keras_towers.datasets.make_shapes(512, seed=0)
pairs = keras_towers.training.PairArrays(images, captions)

# 1. The views: a weakly augmented global view first, then the augmented
#    ones. Each is a named preset (`augment.IMAGE_PRESETS`,
#    `augment.TEXT_PRESETS`) with every strength an overridable argument.
size = images.shape[1]
image_views = [
    augment.ImageAugment.from_preset("rocket-global", size=size),
    augment.ImageAugment.from_preset("rocket-augmented", size=size),
    augment.ImageAugment.from_preset("rocket-augmented", size=size),
]
text_views = [
    augment.TextAugment.from_preset("rocket-global"),
    augment.TextAugment.from_preset("rocket-augmented"),
    augment.TextAugment.from_preset("rocket-augmented"),
]
caption = "a large green triangle on a white background"
print(f"caption: {caption!r}")
for seed in range(3):
    print(f"  augmented view {seed}: {text_views[1].augment(caption, [0, seed])!r}")

# 2. The epoch-seeded pipeline: the same example order as plain CLIP training
#    (`epoch_shuffled_dataset`), each example mapped to its views. The
#    returned callback tells the pipeline which epoch is running.
dataset, epoch_callback = keras_towers.training.epoch_shuffled_view_dataset(
    pairs, batch_size=64, seed=0, image_views=image_views, text_views=text_views
)

# 3. The model: CLIPRocket with the SiamLIP add-on. Label smoothing (0.1)
#    applies to the augmented terms only; the h heads get their own
#    temperature (init 10). `lock_image="backbone"` with pretrained
#    `image_tower_source` / `text_tower_source` gives the pretrained regime.
#    `tiny_text64`: the tiny towers with a 64-byte text context, room for the
#    longest captions.
model = keras_towers.CLIPRocket.tiny(addon="siamlip", config="tiny_text64")
model.compile(learning_rate=2e-3, weight_decay=0.01)
history = model.fit(
    dataset, epochs=epochs, callbacks=[epoch_callback], verbose=0
).history

# 4. What it logs: the global (z) and local (h, augmented views) InfoNCE terms,
#    their combination `(global + 2 local) / 3` per direction, and the
#    add-on's loss.
print("epoch | global i2t | local i2t | CL2L  | siamlip")
for e in range(epochs):
    print(
        f"{e:5d} | {history['global_i2t_loss'][e]:10.3f} | "
        f"{history['local_i2t_loss'][e]:9.3f} | {history['clip_loss'][e]:5.3f} | "
        f"{history['siamlip_loss'][e]:7.3f}"
    )

# 5. Save, reload and classify new images zero-shot with each head: the
#    global z head (CLIP's), the augmented-view h head, or their ensemble of
#    similarities `w cos_z + (1 - w) cos_h` (`keras-towers eval
#    --zero-shot-head ensemble --ensemble-weight 0.5` does the same).
preset_dir = os.path.join(tempfile.mkdtemp(), "shapes_rocket")
model.save_to_preset(preset_dir, description="CLIPRocket on drawn shapes (guide)")
restored = keras_towers.CLIPRocket.from_preset(preset_dir)
class_names = keras_towers.datasets.shape_class_names()
test_images, _, test_labels = keras_towers.datasets.make_shapes(120, seed=1)
chance = 1 / len(class_names)
for head in ("global", "augmented", "ensemble"):
    restored.set_zero_shot_head(head, ensemble_weight=0.5)
    text_embeddings = restored.encode_texts([f"a {name}" for name in class_names])
    scores = restored.encode_images(test_images) @ text_embeddings.T
    accuracy = float(np.mean(scores.argmax(axis=1) == test_labels))
    print(
        f"{head:9s} head: zero-shot accuracy on 120 new images: {accuracy:.1%} "
        f"(chance {chance:.1%})"
    )

# 6. From the command line, on the embedded corpus (`keras-towers data
#    prepare`), the recipe and each add-on, with the view sets `rocket`
#    (the paper's), `light` or `none` (CLIP plus the add-on):
#
#        keras-towers train --method clip-improved --data embedded \
#            --epochs 20 --augment rocket --output runs/clip_improved
#        keras-towers train --method swalip --data embedded --output runs/swalip
#        keras-towers eval --preset runs/clip_improved \
#            --task zeroshot:fashion-mnist --zero-shot-head ensemble
