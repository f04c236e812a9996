"""The recipes' training data: the embedded corpus's splits, streamed, or
pairs from a path (`keras_towers.recipes.load_training_data`)."""

from __future__ import annotations

from keras_towers import datasets
from keras_towers.preprocessing import DEFAULT_FRAMING
from keras_towers.training import PairArrays
from keras_towers.training import StreamedPairs

__all__ = ["load_training_data"]


def load_training_data(data: str, image_size: int, resize=DEFAULT_FRAMING):
    """`"embedded"` or a path -> `(train, validation or None, info)`.

    `"embedded"` is the corpus built by `keras-towers data prepare`: the
    train split for training and the validation split for `val_` metrics
    (the Tux Paint test split is never read here). Images are framed by
    `resize`: a framing name (default `"pad"`, every recipe's framing) or
    the model to train, whose `preprocessor.framing` is read; the pairs and
    `info["framing"]` record it, and the recipes' trainers refuse a model
    that frames otherwise.
    """
    if data == "embedded":
        train = datasets.embedded_records("train")
        validation = datasets.embedded_records("validation")
        framing = _framing_of(resize)
        train_pairs = _streamed_records(train, image_size, framing)
        validation_pairs = _streamed_records(validation, image_size, framing)
        info = {
            "name": "embedded",
            "train_pairs": len(train_pairs),
            "validation_pairs": len(validation_pairs),
            "framing": train_pairs.framing,
            "sources": sorted({r.get("source", "?") for r in train}),
            "licenses": sorted({r.get("license", "?") for r in train}),
        }
        return train_pairs, validation_pairs, info
    pairs = PairArrays.from_dataset(
        datasets.load_pairs(data), image_size, resize=resize
    )
    info = {"name": str(data), "train_pairs": len(pairs), "framing": pairs.framing}
    return pairs, None, info


def _framing_of(resize) -> str:
    if isinstance(resize, str):
        return resize
    framing = getattr(getattr(resize, "preprocessor", resize), "framing", None)
    if framing is None:
        raise TypeError(
            f"`resize` must be a framing name or a model with a preprocessor. "
            f"Received: {type(resize).__name__}."
        )
    return framing


def _streamed_records(records: list, image_size: int, framing: str) -> StreamedPairs:
    """Corpus records as pairs whose images are decoded only when read (a
    locked tower's features stream them; `.images` loads them all)."""
    if not records:
        raise ValueError("The corpus split is empty: run `keras-towers data prepare`.")
    return StreamedPairs(
        lambda: datasets.from_records(records, on_error="raise"),
        [r["caption"] for r in records],
        image_size=image_size,
        framing=framing,
        refs=[r.get("id", r["image"]) for r in records],
    )
