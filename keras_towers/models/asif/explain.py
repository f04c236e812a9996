"""Explanations: which anchor pairs make an image and a text similar."""

from __future__ import annotations

import numpy as np

from keras_towers.models.asif.anchors import to_str


class ExplainMixin:
    """ASIF's `explain` (expects `represent`, `encode_*_features` and the
    anchor store)."""

    def explain(
        self,
        image=None,
        text: str | None = None,
        top_n: int | None = 10,
        *,
        image_features=None,
        text_features=None,
    ) -> list[dict]:
        """The anchor pairs that contribute most to `sim(image, text)`.

        `sim = sum_n r_image[n] * r_text[n]` over anchors in both top-k
        sets; each term is one anchor's contribution, so the contributions of
        all shared anchors (`top_n=None`) sum to the similarity.

        Args:
            image: one raw image `(H, W, C)` (or give `image_features`).
            text: one string (or give `text_features`).
            top_n: int or `None`. How many anchors to return (all shared
                anchors if `None`).
            image_features: array `(Di,)`: a precomputed image feature.
            text_features: array `(Dt,)`: a precomputed text feature.

        Returns:
            list of dicts, by decreasing contribution, with `index` (position
            in the anchor set), `id`, `caption`, `image_ref`,
            `contribution`, `image_weight` and `text_weight` (the two
            representations' entries for that anchor).

        Example:

        ```python
        for item in model.explain(image, "a photo of a cat", top_n=3):
            print(item["caption"], item["contribution"])
        ```
        """
        if (image is None) == (image_features is None):
            raise ValueError("Give exactly one of `image` or `image_features`.")
        if (text is None) == (text_features is None):
            raise ValueError("Give exactly one of `text` or `text_features`.")
        if top_n is not None and (not isinstance(top_n, int) or top_n <= 0):
            raise ValueError(
                f"`top_n` must be a positive int or None. Received {top_n!r}"
            )
        if image_features is None:
            if np.ndim(image) != 3:
                raise ValueError(
                    "`image` must be one image (H, W, C). Received shape "
                    f"{np.shape(image)}."
                )
            image_features = self.query_image_features(np.asarray(image)[None])
        if text_features is None:
            text_features = self.encode_text_features([to_str(text, "text")])
        image_rep = self.represent(np.reshape(image_features, (1, -1)), "image", True)
        text_rep = self.represent(np.reshape(text_features, (1, -1)), "text", True)
        shared, in_image, in_text = np.intersect1d(
            image_rep.indices, text_rep.indices, assume_unique=True, return_indices=True
        )
        image_weight = image_rep.data[in_image]
        text_weight = text_rep.data[in_text]
        contribution = image_weight * text_weight
        order = np.argsort(-contribution, kind="stable")[:top_n]
        store = self._anchors
        return [
            {
                "index": int(shared[i]),
                "id": int(store.ids[shared[i]]),
                "caption": store.captions[shared[i]],
                "image_ref": store.image_refs[shared[i]],
                "contribution": float(contribution[i]),
                "image_weight": float(image_weight[i]),
                "text_weight": float(text_weight[i]),
            }
            for i in order
        ]
