"""Image-text retrieval (recall@k and ranks) with any image-text model.

Scores are dot products of whatever `encode_images` / `encode_texts`
return (cosine similarities for keras_towers models, whose embeddings are
unit-norm; pass `normalize=True` to force cosine for a model whose
embeddings are not).
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
import numpy as np
import tensorflow as tf

from keras_towers.evaluation import _inputs
from keras_towers.ops import l2_normalize_numpy as l2_normalize

TEXT_BATCH_SIZE = 256


def _check_ks(ks) -> tuple[int, ...]:
    if isinstance(ks, (int, np.integer)):
        ks = (ks,)
    ks = tuple(ks)
    if not ks:
        raise ValueError("`ks` must contain at least one k.")
    for k in ks:
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"`ks` must be ints >= 1. Received {ks}.")
    return tuple(sorted(set(int(k) for k in ks)))


def _as_ids(ids, name: str) -> np.ndarray:
    if not isinstance(ids, (list, tuple, np.ndarray)):
        ids = keras.ops.convert_to_numpy(ids)
    ids = np.asarray(ids)
    if ids.ndim != 1:
        raise ValueError(f"`{name}` must be 1-D (one id each). Got shape {ids.shape}.")
    return ids


def ranks_and_rankings(
    queries: np.ndarray,
    gallery: np.ndarray,
    query_codes: np.ndarray,
    gallery_codes: np.ndarray,
    chunk_size: int,
    num_top: int = 0,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Rank of the best-ranked correct gallery item for each query.

    A gallery item is correct for a query when their codes are equal. Scores
    are `queries @ gallery.T`, computed `chunk_size` queries at a time so a
    full `Q x N` matrix never exists. The ranking is a stable sort by
    descending score: ties go to the lower gallery index, both in the ranks
    and in the returned top indices.

    Returns:
        `(ranks, top)`: 1-based int64 ranks `(Q,)` and, if `num_top > 0`, the
        top `num_top` gallery indices per query `(Q, num_top)`.
    """
    ranks = np.empty(len(queries), "int64")
    tops = [] if num_top else None
    index = np.arange(len(gallery))[None, :]
    for start in range(0, len(queries), chunk_size):
        stop = start + chunk_size
        scores = queries[start:stop] @ gallery.T
        correct = query_codes[start:stop, None] == gallery_codes[None, :]
        masked = np.where(correct, scores, -np.inf)
        first_correct = np.argmax(masked, axis=1)  # first index of the best
        best = masked[np.arange(len(masked)), first_correct][:, None]
        ahead = (scores > best) | ((scores == best) & (index < first_correct[:, None]))
        ranks[start:stop] = 1 + np.sum(ahead & ~correct, axis=1)
        if num_top:
            order = np.argsort(-scores, axis=1, kind="stable")
            tops.append(order[:, :num_top])
    if num_top:
        top = np.concatenate(tops) if tops else np.zeros((0, num_top), "int64")
        return ranks, top
    return ranks, None


def evaluate_retrieval(
    model,
    images,
    texts: Sequence[str] | None = None,
    ks: Sequence[int] = (1, 5, 10),
    batch_size: int = 64,
    image_ids: Sequence | None = None,
    text_ids: Sequence | None = None,
    chunk_size: int = 1024,
    normalize: bool = False,
    return_rankings: bool = False,
    verbose: int = 1,
) -> dict:
    """Image-to-text and text-to-image retrieval recall@k and ranks.

    By default image `i` and text `i` are a pair (one caption per image) and
    every other item is a distractor. With several captions per image, give
    ids: the texts whose id equals an image's id are that image's captions.
    Image-to-text counts a hit at `k` if *any* of the image's captions is in
    its top `k` (the open_clip / COCO Karpathy-split convention); its rank is
    the rank of the best-ranked caption. Text-to-image has one correct image
    per caption. Ties are broken towards the lower index (a stable sort).

    Scores are dot products of the embeddings the model returns (cosine for
    unit-norm embeddings); `normalize=True` L2-normalises them first. The
    similarity matrix is computed `chunk_size` queries at a time.

    Args:
        model: any object with `encode_images(images, batch_size)` and
            `encode_texts(texts, batch_size)` returning `(N, D)` arrays.
        images: a uint8 batch `(N, H, W, C)` or a list of `(H, W, C)` images
            (with `texts`); or, with `texts=None`, a list of
            `(image, caption)` pairs or a `tf.data.Dataset` of unbatched
            `{"images": (H, W, C) uint8, "texts": tf.string}` dicts (or
            `(image, caption)` tuples), streamed in batches.
        texts: list of str, or None when `images` holds the captions.
        ks: tuple of int. The k of each recall@k.
        batch_size: int. Images per `encode_images` call (texts go in
            batches of `max(batch_size, 256)`).
        image_ids: optional ids, one per image. Images sharing an id are the
            same image (e.g. a pair dataset that repeats an image for each
            of its captions): only the first is embedded and ranked. Without
            `text_ids`, each text takes the id of the image it is paired
            with (texts and images must then have the same length).
        text_ids: optional ids, one per text: the id of the image the text
            describes (an image index when `image_ids` is None).
        chunk_size: int. Queries scored at once; memory is
            `chunk_size x gallery size` floats.
        normalize: bool. L2-normalise both embeddings before scoring.
        return_rankings: bool. Also return, per query, the top `max(ks)`
            indices (`"image_to_text_rankings"` into `texts`,
            `"text_to_image_rankings"` into the input images), the rank of
            the correct item (`"image_to_text_ranks"`, `"text_to_image_ranks"`),
            `"image_query_indices"` (input image index of each
            image-to-text query) and `"texts"` (the captions, in order).
        verbose: int. 0 silences the progress bar.

    Returns:
        dict with `"image_to_text_recall@k"` and `"text_to_image_recall@k"`
        for each k, `"image_to_text_mean_rank"`, `"image_to_text_median_rank"`,
        `"text_to_image_mean_rank"`, `"text_to_image_median_rank"` (1-based),
        `"num_images"` (distinct images), `"num_texts"` and
        `"num_image_queries"` (images with at least one caption; the others
        are only distractors for text-to-image).

    Example:

    ```python
    images, captions, _ = keras_towers.datasets.make_shapes(16)
    model = keras_towers.CLIP.tiny()
    results = keras_towers.evaluation.evaluate_retrieval(
        model, images, captions, ks=(1, 5), verbose=0
    )
    results["image_to_text_recall@1"], results["text_to_image_recall@5"]
    ```
    """
    _inputs.check_model(model)
    ks = _check_ks(ks)
    batch_size = _inputs.check_batch_size(batch_size)
    if (
        isinstance(chunk_size, bool)
        or not isinstance(chunk_size, (int, np.integer))
        or chunk_size < 1
    ):
        raise ValueError(f"`chunk_size` must be an int >= 1. Received {chunk_size!r}.")

    if isinstance(images, tf.data.Dataset) or _inputs.looks_like_pairs(images):
        if texts is not None:
            raise ValueError(
                "`texts` must be None when `images` is a dataset or a list of "
                "(image, caption) pairs: the captions come from there."
            )
        if not isinstance(images, tf.data.Dataset):
            images, texts = _inputs.split_pairs(images)
        batches = _inputs.Batches(
            images,
            texts,
            batch_size=batch_size,
            extra_key=_inputs.TEXT_KEY,
            extra_name="texts",
        )
        texts = None  # collected from the batches below
    else:
        if texts is None:
            raise ValueError(
                "`texts` is required when `images` is an array or a list of images."
            )
        if isinstance(texts, (str, bytes)):
            raise TypeError("`texts` must be a list of strings, not one string.")
        texts = [_inputs.as_text(t) for t in texts]
        batches = _inputs.Batches(
            images, None, batch_size=batch_size, require_extra=False
        )

    if image_ids is not None:
        image_ids = _as_ids(image_ids, "image_ids")
        # Embed each distinct image once: keep the first occurrence of an id.
        keep = np.zeros(len(image_ids), bool)
        keep[np.unique(image_ids, return_index=True)[1]] = True
    else:
        keep = None

    bar = _inputs.progbar(batches.total, verbose)
    features, kept_positions, collected = [], [], []
    seen = 0
    for batch_images, batch_texts in batches:
        n = len(batch_images)
        positions = np.arange(seen, seen + n)
        seen += n
        if batch_texts is not None:
            collected.extend(batch_texts)
        if keep is not None:
            if seen > len(keep):
                raise ValueError(
                    f"`image_ids` has {len(keep)} entries but `images` has more "
                    "images; they must match."
                )
            mask = keep[positions]
            positions = positions[mask]
            if isinstance(batch_images, np.ndarray):
                batch_images = batch_images[mask]
            else:
                batch_images = [
                    im for im, m in zip(batch_images, mask, strict=True) if m
                ]
        if len(positions):
            features.append(_inputs.encode_images(model, batch_images, batch_size))
            kept_positions.append(positions)
        if bar is not None:
            bar.update(seen)
    if bar is not None and bar.target is None:
        bar.update(seen, finalize=True)
    num_inputs = seen
    if num_inputs == 0:
        raise ValueError("`images` is empty: there is nothing to retrieve.")
    if texts is None:
        texts = collected
    if not texts:
        raise ValueError("`texts` is empty: there is nothing to retrieve.")

    image_codes, text_codes, image_positions = _resolve_ids(
        image_ids, text_ids, num_inputs, len(texts), kept_positions
    )
    image_emb = np.concatenate(features)
    text_emb = _inputs.encode_texts(model, texts, max(batch_size, TEXT_BATCH_SIZE))
    if image_emb.shape[1] != text_emb.shape[1]:
        raise ValueError(
            f"Image embeddings have dimension {image_emb.shape[1]} but text "
            f"embeddings have {text_emb.shape[1]}; they must match."
        )
    if normalize:
        image_emb, text_emb = l2_normalize(image_emb), l2_normalize(text_emb)

    # Images without any caption cannot be image-to-text queries.
    has_text = np.isin(image_codes, text_codes)
    num_top = max(ks) if return_rankings else 0
    i2t_ranks, i2t_top = ranks_and_rankings(
        image_emb[has_text],
        text_emb,
        image_codes[has_text],
        text_codes,
        chunk_size,
        num_top,
    )
    t2i_ranks, t2i_top = ranks_and_rankings(
        text_emb, image_emb, text_codes, image_codes, chunk_size, num_top
    )

    results = {}
    for name, ranks in (("image_to_text", i2t_ranks), ("text_to_image", t2i_ranks)):
        for k in ks:
            results[f"{name}_recall@{k}"] = float(np.mean(ranks <= k))
        results[f"{name}_mean_rank"] = float(np.mean(ranks))
        results[f"{name}_median_rank"] = float(np.median(ranks))
    results["num_images"] = int(len(image_emb))
    results["num_texts"] = int(len(text_emb))
    results["num_image_queries"] = int(np.sum(has_text))
    if return_rankings:
        results["image_to_text_rankings"] = i2t_top
        results["image_to_text_ranks"] = i2t_ranks
        results["image_query_indices"] = image_positions[has_text]
        results["text_to_image_rankings"] = image_positions[t2i_top]
        results["text_to_image_ranks"] = t2i_ranks
        results["texts"] = list(texts)
    return results


def _resolve_ids(image_ids, text_ids, num_images, num_texts, kept_positions):
    """Integer codes for the kept images and for the texts, and positions."""
    image_positions = np.concatenate(kept_positions)
    if text_ids is not None:
        text_ids = _as_ids(text_ids, "text_ids")
        if len(text_ids) != num_texts:
            raise ValueError(
                f"`text_ids` has {len(text_ids)} entries but there are "
                f"{num_texts} texts; they must match."
            )
    if image_ids is None:
        image_ids = np.arange(num_images)
        if text_ids is None:
            if num_images != num_texts:
                raise ValueError(
                    f"There are {num_images} images and {num_texts} texts. "
                    "Without `image_ids`/`text_ids` image i is paired with text "
                    "i, so the counts must match."
                )
            text_ids = image_ids
    else:
        if len(image_ids) != num_images:
            raise ValueError(
                f"`image_ids` has {len(image_ids)} entries but there are "
                f"{num_images} images; they must match."
            )
        if text_ids is None:
            if num_texts != num_images:
                raise ValueError(
                    f"`image_ids` without `text_ids` pairs text i with image i, "
                    f"but there are {num_images} images and {num_texts} texts. "
                    "Pass `text_ids` too."
                )
            text_ids = image_ids
    try:
        _, codes = np.unique(np.concatenate([image_ids, text_ids]), return_inverse=True)
    except TypeError as e:
        raise TypeError(
            "`image_ids` and `text_ids` must be comparable values of one type "
            f"(e.g. all ints or all strings): {e}"
        ) from None
    codes = codes.reshape(-1)
    image_codes = codes[:num_images][image_positions]
    text_codes = codes[num_images:]
    orphans = np.flatnonzero(~np.isin(text_codes, image_codes))
    if orphans.size:
        j = int(orphans[0])
        raise ValueError(
            f"{orphans.size} text(s) describe no image: text {j} has id "
            f"{text_ids[j].tolist()!r}, which no image has."
        )
    return image_codes, text_codes, image_positions
