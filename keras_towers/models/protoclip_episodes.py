"""ProtoCLIP's episodes: one Keras epoch per episode, re-clustered each time.

`ProtoCLIPEpisodes` is both the training data and the callback:

- `dataset` yields raw batches `{"images", "texts", "sample_index"}` of the
  current episode (positions `0 .. episode_size - 1` in an order that depends
  only on `(seed, episode)`, as `keras_towers.training.epoch_shuffled_dataset`
  does for plain epochs), built once; it reads the episode's sample indices
  from a `tf.Variable` when Keras opens the epoch's iterator, which happens
  after `on_epoch_begin`;
- `on_epoch_begin(episode)` draws the episode (`episode_size` data-set rows
  with replacement, from `(seed, episode)`), encodes it with the model in
  inference mode, clusters the image and text prototype features
  (`keras_towers.clustering.kmeans`), builds the PBT prototypes and writes
  everything into the model's episode state (`ProtoCLIP.set_episode_state`).

JAX: Keras' JAX trainer reads the model's variables into the compiled step's
state right after `on_epoch_begin` (`_jax_state_synced = True` in `fit`), and
reattaches them before `on_epoch_end`, so values assigned here reach the
episode's steps (tested in `tests/test_protoclip.py`).
"""

from __future__ import annotations

import os
import shutil

import keras
import numpy as np
import tensorflow as tf

from keras_towers import clustering
from keras_towers import objectives_proto
from keras_towers.models.protoclip import SAMPLE_INDEX_KEY
from keras_towers.preprocessing import IMAGE_KEY
from keras_towers.preprocessing import TEXT_KEY
from keras_towers.utils.backup import SafeBackupAndRestore
from keras_towers.utils.epochs import shuffled_index_batches

#: Accepted inputs per modality: raw data or a locked tower's cached features.
_INPUT_KEYS = {
    "image": (IMAGE_KEY, "image_features"),
    "text": (TEXT_KEY, "text_features"),
}


def _as_arrays(pairs) -> dict:
    """Equally long arrays from a dict or `training.PairArrays`: raw
    `"images"` / `"texts"`, or a locked tower's cached `"image_features"` /
    `"text_features"` (`keras_towers.cache_locked_features`)."""
    if not isinstance(pairs, dict):
        pairs = {IMAGE_KEY: pairs.images, TEXT_KEY: pairs.texts}
    arrays = {}
    for key, value in pairs.items():
        value = np.asarray(value)
        arrays[key] = value.astype(str) if value.dtype == object else value
    for modality, keys in _INPUT_KEYS.items():
        if not any(k in arrays for k in keys):
            raise ValueError(
                f"`pairs` must hold the {modality} input, one of {keys}. "
                f"Received keys: {sorted(arrays)}"
            )
    lengths = {k: len(v) for k, v in arrays.items()}
    if len(set(lengths.values())) != 1 or not min(lengths.values()):
        raise ValueError(
            f"`pairs` arrays must be non-empty and equally long. Received: {lengths}"
        )
    return arrays


def _seed(*parts: int) -> int:
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1)[0])


class ProtoCLIPEpisodes(keras.callbacks.Callback):
    """Episodic training data and clustering for `keras_towers.ProtoCLIP`.

    One Keras epoch is one episode. Pass `dataset` to `fit` and this object
    as a callback. Episodes before `infonce_warmup_episodes` and from
    `lit_start_episode` on train the InfoNCE term only (`proto_active = 0`);
    they are clustered anyway, so the prototype diagnostics are logged in
    every episode.

    The final LiT phase of the official recipe (`lit_start_episode`:
    prototype terms off and the image tower frozen, learning rate 0) needs
    `ProtoCLIPEpisodes.fit`, which runs it as a second `fit` with the image
    tower frozen and the optimizer's state carried over; a plain
    `model.fit(episodes.dataset, callbacks=[episodes])` only switches the
    prototype terms off.

    Args:
        model: a `keras_towers.ProtoCLIP`.
        pairs: dict of equally long arrays with raw `"images"` (uint8
            `(N, H, W, 3)`) and `"texts"` (strings), or a
            `keras_towers.training.PairArrays`.
        batch_size: int. Training batch size; the last partial batch of an
            episode is dropped (as in the official code).
        seed: int. Seeds the episodes, their order and k-means.
        teacher_features: float array `(N, model.external_teacher)`, the
            external teacher's features of every pair (required exactly when
            the model has an external teacher).
        infonce_warmup_episodes: int. Leading InfoNCE-only episodes (1).
        lit_start_episode: int or `None`. First (0-based) of the final
            InfoNCE-only episodes; the recipe's `--lit-start-epoch 399` of
            400 episodes switches the prototype terms off from episode 398,
            i.e. `lit_start_episode=398`.
        kmeans_max_iter: int. Lloyd iterations (20, as the recipe).
        kmeans_n_init: int. k-means restarts (3, the recipe's `nredo`).
        kmeans_init: `"random"` (faiss's, the official init) or
            `"k-means++"`.
        feature_batch_size: int. Batch size of the feature pass (default:
            `batch_size`).

    Example:

    ```python
    model = keras_towers.ProtoCLIP.tiny(num_clusters=4, episode_size=16)
    model.compile()
    episodes = keras_towers.ProtoCLIPEpisodes(
        model, {"images": images, "texts": texts}, batch_size=8
    )
    model.fit(episodes.dataset, epochs=3, callbacks=[episodes])
    ```
    """

    def __init__(
        self,
        model,
        pairs,
        batch_size: int,
        seed: int = 0,
        teacher_features=None,
        infonce_warmup_episodes: int = 1,
        lit_start_episode: int | None = None,
        kmeans_max_iter: int = 20,
        kmeans_n_init: int = 3,
        kmeans_init: str = "random",
        feature_batch_size: int | None = None,
    ):
        super().__init__()
        arrays = _as_arrays(pairs)
        episode_size = model.episode_size
        if not 1 <= batch_size <= episode_size:
            raise ValueError(
                f"`batch_size` must be in [1, episode_size={episode_size}]. "
                f"Received: {batch_size}"
            )
        teacher = model.external_teacher
        if (teacher is None) != (teacher_features is None):
            raise ValueError(
                "`teacher_features` are needed exactly when the model has an "
                f"external teacher. Model: external_teacher={teacher}; "
                f"teacher_features given: {teacher_features is not None}."
            )
        if teacher_features is not None:
            teacher_features = np.asarray(teacher_features, "float32")
            expected = (len(next(iter(arrays.values()))), teacher)
            if teacher_features.shape != expected:
                raise ValueError(
                    f"`teacher_features` must have shape {expected} (one row "
                    f"per pair). Received: {teacher_features.shape}"
                )
        self._protoclip = model
        self.num_pairs = len(next(iter(arrays.values())))
        self.episode_size = episode_size
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.teacher_features = teacher_features
        self.infonce_warmup_episodes = int(infonce_warmup_episodes)
        self.lit_start_episode = lit_start_episode
        self.kmeans_options = {
            "max_iter": kmeans_max_iter,
            "n_init": kmeans_n_init,
            "init": kmeans_init,
        }
        self.feature_batch_size = int(feature_batch_size or batch_size)
        #: Data-set rows of the current episode, `(episode_size,)`.
        self.episode_indices = None
        self._rows = tf.Variable(tf.zeros([episode_size], tf.int64), trainable=False)
        self._episode = tf.Variable(0, dtype=tf.int64, trainable=False)
        self._constants = {k: tf.constant(v) for k, v in arrays.items()}
        self.dataset = self._training_dataset()

    def _gather(self, positions) -> dict:
        rows = tf.gather(self._rows, positions)
        batch = {k: tf.gather(c, rows) for k, c in self._constants.items()}
        batch[SAMPLE_INDEX_KEY] = tf.cast(positions, tf.int32)
        return batch

    def _training_dataset(self) -> tf.data.Dataset:
        positions = shuffled_index_batches(
            self.episode_size, self.batch_size, self.seed, self._episode
        )
        return positions.map(self._gather)

    def sample_episode(self, episode: int) -> np.ndarray:
        """The data-set rows of `episode` (with replacement), from `(seed, episode)`."""
        rng = np.random.default_rng(_seed(self.seed, episode))
        return rng.choice(self.num_pairs, self.episode_size, replace=True)

    def episode_features(self) -> dict:
        """Prototype features of the current episode, in inference mode.

        Returns `{"image_proto", "text_proto"}`, float32 `(episode_size,
        proto_dim)` in episode order (NaN set to 0, as the official code).
        """
        positions = tf.data.Dataset.range(self.episode_size)
        ds = positions.batch(self.feature_batch_size).map(self._gather)
        ds = ds.map(lambda b: {k: v for k, v in b.items() if k != SAMPLE_INDEX_KEY})
        outputs = self._protoclip.predict(ds, verbose=0)
        return {
            k: np.nan_to_num(np.asarray(outputs[k], "float32"), nan=0.0)
            for k in ("image_proto", "text_proto")
        }

    def _kmeans(self, x, episode: int, stream: int):
        return clustering.kmeans(
            x,
            self._protoclip.active_clusters,
            seed=_seed(self.seed, episode, stream),
            **self.kmeans_options,
        )

    def cluster_episode(self, features: dict, episode: int) -> dict:
        """Clusters and prototypes of one episode (`set_episode_state` kwargs)."""
        model = self._protoclip
        k = model.active_clusters
        image, text = features["image_proto"], features["text_proto"]
        image_km = self._kmeans(image, episode, 1)
        text_km = self._kmeans(text, episode, 2)

        def pbt(x, ids):
            prototypes = objectives_proto.pbt_prototypes(x, ids, k)
            return keras.ops.convert_to_numpy(prototypes)

        state = {
            "image_cluster_ids": image_km.labels,
            "text_cluster_ids": text_km.labels,
            "image_centroids": image_km.centroids,
            "text_centroids": text_km.centroids,
            # P^{I<-T}: image features averaged over the text clusters.
            "image_prototypes": pbt(image, text_km.labels),
            "text_prototypes": pbt(text, image_km.labels),
        }
        if self.teacher_features is not None:
            rows = self.episode_indices
            labels = self._kmeans(self.teacher_features[rows], episode, 3).labels
            state["external_cluster_ids"] = labels
            state["image_external_prototypes"] = pbt(image, labels)
            state["text_external_prototypes"] = pbt(text, labels)
        return state

    def proto_active(self, episode: int) -> bool:
        """Whether the prototype terms train in `episode`."""
        if episode < self.infonce_warmup_episodes:
            return False
        return self.lit_start_episode is None or episode < self.lit_start_episode

    def on_epoch_begin(self, epoch, logs=None):
        if (
            getattr(self, "_model", None) is not None
            and self.model is not self._protoclip
        ):
            raise ValueError("This ProtoCLIPEpisodes was built for another model.")
        self.episode_indices = self.sample_episode(epoch)
        self._rows.assign(self.episode_indices)
        self._episode.assign(epoch)
        state = self.cluster_episode(self.episode_features(), epoch)
        self._protoclip.set_episode_state(
            proto_active=self.proto_active(epoch), **state
        )

    def fit(
        self,
        epochs: int,
        callbacks=(),
        backup_dir: str | None = None,
        verbose="auto",
    ) -> dict:
        """Train the model for `epochs` episodes; the LiT phase freezes the
        image tower.

        Episodes `0 .. lit_start_episode - 1` run as one `fit`; from
        `lit_start_episode` on, the image tower is frozen
        (`_freeze_image_tower`: not updated), the model is recompiled with a
        copy of the optimizer that keeps its state (moments of the variables
        that still train, step count;
        `_recompile_keeping_optimizer_state`), and a second `fit` continues
        the episode count.

        Args:
            epochs: int. Total number of episodes.
            callbacks: more Keras callbacks (both phases).
            backup_dir: str or `None`. With it,
                `keras_towers.training.SafeBackupAndRestore` checkpoints
                every episode (one subfolder per phase; atomic, two
                generations, a damaged one skipped) and a rerun with the
                same arguments resumes where an interrupted run stopped,
                with the same episodes; the folder is removed when training
                completes.
            verbose: `fit`'s verbosity.

        Returns:
            The history dict of the episodes run now (both phases).
        """
        if int(epochs) < 1:
            raise ValueError(f"`epochs` must be >= 1. Received: {epochs}")
        model = self._protoclip
        lit = self.lit_start_episode
        phases = [(0, int(epochs), "episodes")]
        if lit is not None and 0 < lit < epochs:
            phases = [(0, lit, "episodes"), (lit, int(epochs), "lit_phase")]
        elif lit is not None and lit <= 0:
            phases = [(0, int(epochs), "lit_phase")]
        history: dict = {}
        for start, end, name in phases:
            if name == "lit_phase" and _freeze_image_tower(model):
                _recompile_keeping_optimizer_state(model)
            phase_callbacks = [self, *callbacks]
            if backup_dir is not None:
                phase_callbacks.append(
                    SafeBackupAndRestore(
                        os.path.join(backup_dir, name), delete_checkpoint=False
                    )
                )
            result = model.fit(
                self.dataset,
                epochs=end,
                initial_epoch=start,
                callbacks=phase_callbacks,
                verbose=verbose,
            )
            for key, values in result.history.items():
                history.setdefault(key, []).extend(values)
        if backup_dir is not None and os.path.isdir(backup_dir):
            shutil.rmtree(backup_dir)
        return history


def _freeze_image_tower(model) -> bool:
    """Freeze what still trains in the image tower; `True` if anything did.

    A tower whose backbone is locked keeps `locked_part == "backbone"` (its
    cached pooled features stay valid) and gets its head frozen; any other
    tower is frozen whole (`trainable = False`, then run in inference mode).
    """
    tower = model.image_tower
    if tower.locked_part == "tower":
        return False
    if tower.locked_part == "backbone":
        if tower.projection is None or not tower.projection.trainable:
            return False
        tower.projection.trainable = False
        return True
    tower.trainable = False
    return True


def _recompile_keeping_optimizer_state(model) -> None:
    """Recompile after trainable variables were frozen, carrying the
    optimizer's state over.

    Keras' JAX trainer needs the optimizer built on exactly the trainable
    variables, so a fresh optimizer of the same config is compiled (the
    model's `compile` re-applies its weight-decay exclusions), built, and
    given the old optimizer's values for every variable both hold (step
    count, moments of the variables that still train), matched by path.
    """
    old = model.optimizer
    if old is None or not old.built:
        model.compile(optimizer=old)
        return
    new = type(old).from_config(old.get_config())
    model.compile(optimizer=new)
    new.build(model.trainable_variables)
    values = {v.path: v for v in old.variables}
    missing = []
    for variable in new.variables:
        source = values.get(variable.path)
        if source is None:
            missing.append(variable.path)
        else:
            variable.assign(source)
    if missing:
        raise RuntimeError(
            f"Optimizer state not carried over for {missing}: the optimizer "
            "names its variables differently than expected."
        )
