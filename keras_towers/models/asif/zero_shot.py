"""Zero-shot classification over ASIF's relative representations."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp

from keras_towers import relative
from keras_towers.models.asif.anchors import check_features
from keras_towers.models.asif.anchors import to_str
from keras_towers.templates import fill_templates
from keras_towers.templates import get_templates

ZERO_SHOT_MODES = ("best_single", "average")


@dataclasses.dataclass
class ZeroShotHead:
    """Zero-shot class vectors over one anchor set.

    Attributes:
        weights: `scipy.sparse.csr_array`. `(C, N)` averaged class vectors
            (`mode="average"`) or `(C * T, N)` prompt vectors laid out
            class-major (`mode="best_single"`).
        mode: `"best_single"` or `"average"`.
        num_classes: int.
        num_templates: int.
    """

    weights: sp.csr_array
    mode: str
    num_classes: int
    num_templates: int

    def scores(self, image_representations) -> np.ndarray:
        """`(Q, C)` class scores for `(Q, N)` image representations."""
        sims = relative.similarity(image_representations, self.weights)
        if self.mode == "best_single":
            return relative.group_max(sims, self.num_templates)
        return sims

    def predict(self, image_representations) -> np.ndarray:
        """Predicted class index per image."""
        return np.argmax(self.scores(image_representations), axis=1)


def fill(template, class_name: str) -> str:
    """One prompt: a template string with one `{}`, or a function of the
    class name."""
    if callable(template):
        return to_str(template(class_name), "template(class_name)")
    template = to_str(template, "templates[i]")
    if "{}" not in template:
        raise ValueError(
            f"Template {template!r} has no '{{}}' placeholder for the class name."
        )
    return fill_templates([template], class_name)[0]


class ZeroShotMixin:
    """ASIF's zero-shot API (expects `encode_texts`, `represent` and
    `encode_images` with a `sparse=` argument)."""

    def zero_shot_head(
        self,
        class_names: Sequence[str],
        templates: Sequence[str | Callable[[str], str]] = ("{}",),
        mode: str = "best_single",
        batch_size: int = 256,
        *,
        prompt_features=None,
    ) -> ZeroShotHead:
        """Class vectors for zero-shot classification.

        One prompt per (class, template) pair, laid out class-major.

        - `mode="best_single"` (the official ASIF rule): an image's class is
          the class of its most similar prompt, i.e. each class scores as its
          best template. Prompt vectors are not averaged.
        - `mode="average"` (CLIP's rule): a class vector is the mean of its
          unit-norm prompt representations, renormalised.

        Args:
            class_names: list of class names.
            templates: a template-set name of
                `keras_towers.evaluation.get_templates` (`"openai"`,
                `"best7"`, `"simple"`, `"none"`), or strings with one `{}`
                (e.g. `"a photo of a {}."`) or functions of the class name.
            mode: `"best_single"` or `"average"`.
            batch_size: int. Texts per encoder call.
            prompt_features: optional array `(C * T, Dt)` of precomputed
                text features of the prompts, class-major (then no text
                tower is needed).

        Returns:
            a `ZeroShotHead` with `.scores(image_reps)` and `.predict(...)`.
        """
        if mode not in ZERO_SHOT_MODES:
            raise ValueError(
                f"`mode` must be one of {ZERO_SHOT_MODES}. Received: {mode!r}"
            )
        class_names = [
            to_str(c, f"class_names[{i}]") for i, c in enumerate(class_names)
        ]
        if not class_names:
            raise ValueError("`class_names` is empty.")
        if isinstance(templates, str) and "{}" not in templates:
            templates = get_templates(templates)
        if isinstance(templates, str) or callable(templates):
            templates = [templates]
        templates = list(templates)
        if not templates:
            raise ValueError("`templates` is empty.")
        prompts = [fill(t, c) for c in class_names for t in templates]
        if prompt_features is None:
            reps = self.encode_texts(prompts, batch_size=batch_size, sparse=True)
        else:
            prompt_features = check_features(prompt_features, "prompt_features")
            if len(prompt_features) != len(prompts):
                raise ValueError(
                    f"`prompt_features` must have one row per prompt: "
                    f"{len(class_names)} classes x {len(templates)} templates = "
                    f"{len(prompts)}. Received {len(prompt_features)} rows."
                )
            reps = self.represent(prompt_features, "text", sparse=True)
        if mode == "average":
            reps = relative.group_mean(reps, len(templates))
        return ZeroShotHead(reps, mode, len(class_names), len(templates))

    def zero_shot_scores(
        self,
        images=None,
        class_names: Sequence[str] = (),
        templates: Sequence[str | Callable[[str], str]] = ("{}",),
        mode: str = "best_single",
        batch_size: int = 32,
        image_representations=None,
    ) -> np.ndarray:
        """`(Q, C)` zero-shot class scores of raw images.

        Args:
            images: raw images (as for `encode_images`), or `None` when
                `image_representations` are given.
            class_names, templates, mode: see `zero_shot_head`.
            batch_size: int. Images per forward pass.
            image_representations: precomputed `encode_images(...)` output
                (dense or sparse) over the current anchors.
        """
        if (images is None) == (image_representations is None):
            raise ValueError("Give exactly one of `images` or `image_representations`.")
        head = self.zero_shot_head(class_names, templates, mode)
        if image_representations is None:
            image_representations = self.encode_images(images, batch_size, sparse=True)
        return head.scores(image_representations)
