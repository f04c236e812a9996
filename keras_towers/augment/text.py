"""Caption augmentation: stopword removal, one EDA operation, a template.

clip-rocket's text views (`tokenizer.py`): the global caption loses its
stopwords with probability `stopword_p`; an augmented caption does too, then
gets ONE EDA operation (Wei and Zou 2019, as in textaugment's `EDA`), chosen
with weights identity 0, synonym replacement 0.4 (one word, WordNet),
random swap 0.4 (one pair), random deletion 0.2 (each word with p 0.1).

Every random number comes from a NumPy `Generator` seeded by an int64 `[2]`
seed (`keras_towers.augment.example_seed(seed, epoch, index, ...)`), fed to
`tf.numpy_function` as an explicit input: a caption's augmentation is a pure
function of `(text, seed)`, the same on every backend and after a resume.

Differences from clip-rocket, on purpose: the stopword list is our own
(`stopwords.ENGLISH_STOPWORDS`, modelled on NLTK's); captions are split into
words and punctuation with a regular expression instead of NLTK's
`word_tokenize`; when random deletion would delete every word the words are
kept (textaugment returns one random word); a caption is never made empty.

References:
    Fini et al., "Improved baselines for vision-language pre-training",
    TMLR 2023, https://arxiv.org/abs/2305.08675.
    Wei and Zou, "EDA: Easy Data Augmentation Techniques for Boosting
    Performance on Text Classification Tasks", EMNLP 2019,
    https://arxiv.org/abs/1901.11196.
"""

from __future__ import annotations

import re

import keras
import numpy as np
import tensorflow as tf

from keras_towers.augment import _checks
from keras_towers.augment import wordnet as wordnet_lib
from keras_towers.augment.seeds import numpy_generator
from keras_towers.augment.stopwords import ENGLISH_STOPWORDS
from keras_towers.templates import check_template_list
from keras_towers.utils.registry import Registry

#: The EDA operations, in the order of `eda_weights`' keys.
EDA_OPS = ("identity", "synonym", "swap", "deletion")
#: clip-rocket's choice of one EDA operation (`tokenizer.py` defaults).
ROCKET_EDA_WEIGHTS = {"identity": 0.0, "synonym": 0.4, "swap": 0.4, "deletion": 0.2}
#: How stopword removal draws: once per caption (clip-rocket: with
#: probability p every stopword goes) or once per stopword.
STOPWORD_UNITS = ("caption", "word")

#: name -> keyword arguments of `TextAugment`.
TEXT_PRESETS = Registry(
    "text augmentation preset",
    hint="Register one with `keras_towers.augment.TEXT_PRESETS.add(name, kwargs)`.",
)
TEXT_PRESETS.add("none", {"stopword_p": 0.0, "eda_weights": None})
TEXT_PRESETS.add("rocket-global", {"stopword_p": 0.8, "eda_weights": None})
TEXT_PRESETS.add(
    "rocket-augmented", {"stopword_p": 0.8, "eda_weights": ROCKET_EDA_WEIGHTS}
)

#: Phrasings a caption is wrapped in by `TextAugment(templates=...)`: our
#: own list of how people describe a picture, deliberately not the
#: evaluation sets' prompts (`keras_towers.templates`). A text tower trained
#: only on bare names ("grinning face", "flag: Japan") never sees the words
#: around a class name in a zero-shot prompt ("a photo of a {}."); seeing
#: its captions in varied phrasings teaches it to look past them.
CAPTION_TEMPLATES = (
    "a picture of {}.",
    "an image of {}.",
    "a drawing of {}.",
    "an icon of {}.",
    "a photo of {}.",
    "a cartoon of {}.",
    "a sketch of {}.",
    "a rendering of {}.",
    "art of {}.",
    "an illustration of {}.",
    "clip art of {}.",
    "a small picture of {}.",
    "a black and white picture of {}.",
    "a symbol of {}.",
    "this is {}.",
    "{}, drawn.",
)
# The caption in one of `CAPTION_TEMPLATES` half of the time.
TEXT_PRESETS.add(
    "templated",
    {"stopword_p": 0.0, "templates": CAPTION_TEMPLATES, "template_p": 0.5},
)

# Words (with inner apostrophes, "don't") or single punctuation marks.
_TOKEN = re.compile(r"\w+(?:'\w+)*|[^\w\s]")


def _check_weights(weights) -> dict[str, float] | None:
    if weights is None:
        return None
    if not isinstance(weights, dict) or set(weights) - set(EDA_OPS):
        raise ValueError(
            f"`eda_weights` must be None or a dict with keys among {EDA_OPS}. "
            f"Received: {weights!r}."
        )
    out = {op: float(weights.get(op, 0.0)) for op in EDA_OPS}
    if any(w < 0 or not np.isfinite(w) for w in out.values()) or not sum(out.values()):
        raise ValueError(
            f"`eda_weights` must be finite, >= 0 and not all 0. Received: {weights!r}."
        )
    return out


def _check_templates(templates) -> list[str]:
    if isinstance(templates, str):
        raise ValueError(
            '`templates` must be a list of strings each containing exactly one "{}" '
            f"where the caption goes (not a set name). Received: {templates!r}."
        )
    return check_template_list(templates, slot="the caption")


@keras.saving.register_keras_serializable(package="keras_towers")
class TextAugment:
    """One augmented caption view, as a seeded function usable in `tf.data`.

    Steps, all drawn from a NumPy `Generator` seeded by the `[2]` seed:

    1. stopword removal: with `stopword_unit="caption"` (clip-rocket's
       `tokenizer.py`), with probability `stopword_p` the caption is split
       into words and punctuation and every stopword is dropped; with
       `"word"`, each stopword is dropped with probability `stopword_p`. If
       nothing would remain, the caption is kept.
    2. if `eda_weights` is given, ONE operation chosen with those weights,
       on the whitespace-separated words:
       - `"identity"`: nothing;
       - `"synonym"`: up to `synonym_n` distinct non-stopwords that have
         WordNet synonyms are replaced (every occurrence) by one of them,
         uniformly;
       - `"swap"`: `swap_n` times, two distinct positions swap words;
       - `"deletion"`: each word is deleted with probability `deletion_p`
         (one-word captions and all-deleted captions are kept).
    3. with probability `template_p`, the caption goes into the `"{}"` of
       one of `templates`, drawn uniformly.

    Args:
        stopword_p: float in `[0, 1]`.
        stopword_unit: `"caption"` or `"word"`.
        eda_weights: None (no EDA op) or a dict over `EDA_OPS` of weights.
        synonym_n: int. Words replaced by synonym replacement.
        swap_n: int. Swaps done by random swap.
        deletion_p: float in `[0, 1]`.
        stopwords: optional list of lower-case stopwords; default
            `keras_towers.augment.stopwords.ENGLISH_STOPWORDS`.
        wordnet_dir: optional directory of the WordNet files (default
            `/usr/share/wordnet`, Debian's `wordnet-base`); read only when
            synonym replacement has a positive weight.
        templates: optional list of strings with exactly one `"{}"` each
            (e.g. `CAPTION_TEMPLATES`).
        template_p: float in `[0, 1]`. Probability of wrapping the caption
            in a template; must be 0 without `templates`.

    Example:

    ```python
    augment = keras_towers.augment.TextAugment.from_preset("rocket-augmented")
    seed = keras_towers.augment.example_seed(0, epoch=0, index=5, stream=2)
    augment(tf.constant("a red car parked on the street"), seed)
    ```
    """

    def __init__(
        self,
        stopword_p: float = 0.8,
        stopword_unit: str = "caption",
        eda_weights: dict[str, float] | None = None,
        synonym_n: int = 1,
        swap_n: int = 1,
        deletion_p: float = 0.1,
        stopwords: list[str] | None = None,
        wordnet_dir: str | None = None,
        templates: list[str] | None = None,
        template_p: float = 0.0,
    ):
        self.stopword_p = _checks.probability(stopword_p, "stopword_p")
        if stopword_unit not in STOPWORD_UNITS:
            raise ValueError(
                f"`stopword_unit` must be one of {STOPWORD_UNITS}. "
                f"Received: {stopword_unit!r}."
            )
        self.stopword_unit = stopword_unit
        self.eda_weights = _check_weights(eda_weights)
        self.synonym_n = _checks.positive_int(synonym_n, "synonym_n")
        self.swap_n = _checks.positive_int(swap_n, "swap_n")
        self.deletion_p = _checks.probability(deletion_p, "deletion_p")
        if stopwords is not None and (
            isinstance(stopwords, str) or not all(isinstance(w, str) for w in stopwords)
        ):
            raise ValueError(
                "`stopwords` must be None or a list of strings. "
                f"Received: {stopwords!r}."
            )
        self.stopwords = None if stopwords is None else sorted(set(stopwords))
        self._stopword_set = frozenset(
            ENGLISH_STOPWORDS if stopwords is None else (w.lower() for w in stopwords)
        )
        self.wordnet_dir = wordnet_dir
        self.templates = None if templates is None else _check_templates(templates)
        self.template_p = _checks.probability(template_p, "template_p")
        if self.template_p > 0 and not self.templates:
            raise ValueError(
                f"`template_p` is {template_p} but there are no `templates`: pass a list of "
                'strings each containing one "{}". Received templates=None.'
            )
        self._probabilities = None
        if self.eda_weights is not None:
            w = np.array([self.eda_weights[op] for op in EDA_OPS], np.float64)
            self._probabilities = w / w.sum()
            if self.eda_weights["synonym"] > 0:
                # Fail at construction, not deep inside a tf.data worker.
                wordnet_lib.check_installed(wordnet_dir)

    @classmethod
    def from_preset(cls, name: str, **overrides) -> TextAugment:
        """The preset `name` (`TEXT_PRESETS.names()`), with `overrides`."""
        return cls(**{**TEXT_PRESETS.get(name), **overrides})

    def get_config(self) -> dict:
        return {
            "stopword_p": self.stopword_p,
            "stopword_unit": self.stopword_unit,
            "eda_weights": None if self.eda_weights is None else dict(self.eda_weights),
            "synonym_n": self.synonym_n,
            "swap_n": self.swap_n,
            "deletion_p": self.deletion_p,
            "stopwords": None if self.stopwords is None else list(self.stopwords),
            "wordnet_dir": self.wordnet_dir,
            "templates": None if self.templates is None else list(self.templates),
            "template_p": self.template_p,
        }

    @classmethod
    def from_config(cls, config: dict) -> TextAugment:
        return cls(**config)

    def __eq__(self, other) -> bool:
        return type(other) is type(self) and other.get_config() == self.get_config()

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"TextAugment({args})"

    @property
    def wordnet(self) -> wordnet_lib.WordNet:
        return wordnet_lib.default_wordnet(self.wordnet_dir)

    # --- pure Python ---

    def is_stopword(self, word: str) -> bool:
        return word.lower() in self._stopword_set

    def remove_stopwords(self, text: str, rng: np.random.Generator) -> str:
        if self.stopword_p == 0.0:
            return text
        tokens = _TOKEN.findall(text)
        if self.stopword_unit == "caption":
            if rng.random() >= self.stopword_p:
                return text
            kept = [t for t in tokens if not self.is_stopword(t)]
        else:
            draws = rng.random(len(tokens))
            kept = [
                t
                for t, u in zip(tokens, draws, strict=True)
                if not (u < self.stopword_p and self.is_stopword(t))
            ]
            if len(kept) == len(tokens):
                return text
        return " ".join(kept) if kept else text

    def synonym_replacement(self, words: list[str], rng) -> list[str]:
        candidates = sorted({w for w in words if not self.is_stopword(w)})
        replaced = 0
        for i in rng.permutation(len(candidates)):
            word = candidates[i]
            synonyms = self.wordnet.synonyms(word)
            if synonyms:
                new = synonyms[rng.integers(len(synonyms))]
                words = [new if w == word else w for w in words]
                replaced += 1
                if replaced >= self.synonym_n:
                    break
        return words

    def random_swap(self, words: list[str], rng) -> list[str]:
        words = list(words)
        for _ in range(self.swap_n):
            if len(words) < 2:
                break
            i = int(rng.integers(len(words)))
            j = int(rng.integers(len(words) - 1))
            j += j >= i
            words[i], words[j] = words[j], words[i]
        return words

    def random_deletion(self, words: list[str], rng) -> list[str]:
        if len(words) < 2:
            return words
        keep = rng.random(len(words)) > self.deletion_p
        kept = [w for w, k in zip(words, keep, strict=True) if k]
        return kept or words

    def augment(self, text: str, seed) -> str:
        """The augmented caption, from a `[2]` seed or a NumPy `Generator`."""
        rng = seed if isinstance(seed, np.random.Generator) else numpy_generator(seed)
        if not text.strip():
            return text
        out = self.remove_stopwords(text, rng)
        if self._probabilities is not None:
            op = EDA_OPS[rng.choice(len(EDA_OPS), p=self._probabilities)]
            words = out.split()
            if op == "synonym":
                words = self.synonym_replacement(words, rng)
            elif op == "swap":
                words = self.random_swap(words, rng)
            elif op == "deletion":
                words = self.random_deletion(words, rng)
            if op != "identity":
                out = " ".join(words) or out
        out = out or text
        # Drawn last, so templates never change the draws of the steps above.
        if self.template_p > 0 and rng.random() < self.template_p:
            out = self.templates[rng.integers(len(self.templates))].replace("{}", out)
        return out

    def augment_numpy(self, texts: np.ndarray, seeds: np.ndarray) -> np.ndarray:
        """`augment` over an array of UTF-8 byte strings and `[..., 2]` seeds."""
        texts = np.asarray(texts, dtype=object)
        seeds = np.asarray(seeds).reshape(-1, 2)
        flat = texts.reshape(-1)
        if len(flat) != len(seeds):
            raise ValueError(
                f"{len(flat)} captions but {len(seeds)} seeds: pass one seed "
                "per caption."
            )
        out = [
            self.augment(
                t.decode("utf-8") if isinstance(t, bytes) else str(t), s
            ).encode("utf-8")
            for t, s in zip(flat, seeds, strict=True)
        ]
        return np.array(out, dtype=object).reshape(texts.shape)

    # --- TensorFlow ---

    def __call__(self, text, seed) -> tf.Tensor:
        """Augment string tensor(s) inside or outside `tf.data`.

        Args:
            text: string tensor of any shape `S`.
            seed: int64 tensor of shape `S + [2]`.

        Returns:
            A string tensor of shape `S`.
        """
        text = tf.convert_to_tensor(text)
        if text.dtype != tf.string:
            raise ValueError(
                f"`text` must be a string tensor. Received dtype {text.dtype.name}."
            )
        seed = tf.cast(seed, tf.int64)
        out = tf.numpy_function(
            self.augment_numpy, [text, seed], tf.string, stateful=False
        )
        return tf.ensure_shape(out, text.shape)
