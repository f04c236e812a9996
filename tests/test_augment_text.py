"""Caption augmentation (stopwords + one EDA op) and the WordNet reader.

Needs Debian's `wordnet-base` (installed by scripts/setup.sh).
"""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from keras_towers import augment
from keras_towers.augment import TextAugment
from keras_towers.augment.stopwords import ENGLISH_STOPWORDS

CAPTION = "A man is riding a red car down the street next to the big dog"


def seed_of(index=0, epoch=0, seed=0, view=1):
    return augment.example_seed(
        seed, epoch, index, stream=augment.TEXT_STREAM, view=view
    ).numpy()


def only(op, **kwargs) -> TextAugment:
    return TextAugment(stopword_p=0.0, eda_weights={op: 1.0}, **kwargs)


# === WordNet ===


def test_wordnet_synonyms_come_from_shared_synsets():
    wn = augment.wordnet.default_wordnet()
    assert "automobile" in wn.synonyms("car") and "car" in wn.synonyms("automobile")
    assert "car" not in wn.synonyms("car")
    # Inflected forms reach their lemma (rules and exception lists).
    assert "automobile" in wn.synonyms("cars")
    assert "goose" in wn.base_forms("geese", "noun")
    assert wn.base_forms("running", "verb")[-1] == "run"
    assert wn.synonyms("qwzxv") == ()


def test_missing_wordnet_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="wordnet-base"):
        TextAugment.from_preset("rocket-augmented", wordnet_dir=str(tmp_path))
    # Without synonym replacement WordNet is not needed.
    TextAugment.from_preset("rocket-global", wordnet_dir=str(tmp_path))


# === Each operation ===


@pytest.mark.parametrize("unit", ["caption", "word"])
def test_stopword_removal_p1_removes_all_and_p0_none(unit):
    for index in range(5):
        seed = seed_of(index)
        out = TextAugment(stopword_p=1.0, stopword_unit=unit).augment(CAPTION, seed)
        words = out.split()
        assert words and not [w for w in words if w.lower() in ENGLISH_STOPWORDS]
        assert words == [
            w for w in CAPTION.split() if w.lower() not in ENGLISH_STOPWORDS
        ]
        same = TextAugment(stopword_p=0.0, stopword_unit=unit).augment(CAPTION, seed)
        assert same == CAPTION


def test_stopword_units_differ_in_what_they_drop():
    per_word = TextAugment(stopword_p=0.5, stopword_unit="word")
    outs = [per_word.augment(CAPTION, seed_of(i)).split() for i in range(20)]
    n_stop = sum(w.lower() in ENGLISH_STOPWORDS for w in CAPTION.split())
    partial = [o for o in outs if 0 < len(CAPTION.split()) - len(o) < n_stop]
    assert partial, "per-word removal should sometimes keep some stopwords"
    per_caption = TextAugment(stopword_p=0.5, stopword_unit="caption")
    lengths = {len(per_caption.augment(CAPTION, seed_of(i)).split()) for i in range(20)}
    assert lengths == {len(CAPTION.split()), len(CAPTION.split()) - n_stop}


def test_caption_of_stopwords_is_never_emptied():
    aug = TextAugment(stopword_p=1.0, eda_weights={"deletion": 1.0}, deletion_p=1.0)
    assert aug.augment("the of and a", seed_of()) == "the of and a"
    assert aug.augment("", seed_of()) == ""


def test_synonym_replacement_uses_a_wordnet_synonym():
    wn = augment.wordnet.default_wordnet()
    for index in range(6):
        out = only("synonym").augment("red car", seed_of(index))
        assert out != "red car"
        # Exactly one word was replaced, by one of its WordNet synonyms.
        if out.startswith("red "):
            assert out[4:] in wn.synonyms("car")
        else:
            assert out.endswith(" car") and out[:-4] in wn.synonyms("red")


def test_synonym_replacement_skips_stopwords_and_unknown_words():
    out = only("synonym").augment("the qwzxv of", seed_of())
    assert out == "the qwzxv of"


def test_random_swap_swaps_exactly_two_words():
    for index in range(5):
        out = only("swap").augment(CAPTION, seed_of(index)).split()
        src = CAPTION.split()
        assert sorted(out) == sorted(src)
        assert sum(a != b for a, b in zip(out, src, strict=True)) == 2


def test_random_deletion_keeps_order_and_never_empties():
    aug = only("deletion", deletion_p=0.5)
    for index in range(5):
        out = aug.augment(CAPTION, seed_of(index)).split()
        src = iter(CAPTION.split())
        assert all(w in src for w in out) and 0 < len(out) < len(CAPTION.split())
    everything = only("deletion", deletion_p=1.0)
    assert everything.augment(CAPTION, seed_of()) == CAPTION


def test_rocket_op_weights_are_used():
    aug = TextAugment.from_preset("rocket-augmented", stopword_p=0.0)
    src = CAPTION.split()
    kinds = set()
    for index in range(40):
        out = aug.augment(CAPTION, seed_of(index)).split()
        if len(out) < len(src):
            kinds.add("deletion")
        elif sorted(out) == sorted(src) and out != src:
            kinds.add("swap")
        elif out != src:
            kinds.add("synonym")
    assert kinds == {"synonym", "swap", "deletion"}


# === Determinism and tf.data ===


def test_deterministic_per_seed_epoch_index():
    aug = TextAugment.from_preset("rocket-augmented")
    first = aug.augment(CAPTION, seed_of(index=2, epoch=3))
    assert aug.augment(CAPTION, seed_of(index=2, epoch=3)) == first
    by_epoch = {aug.augment(CAPTION, seed_of(index=2, epoch=e)) for e in range(6)}
    by_index = {aug.augment(CAPTION, seed_of(index=i, epoch=3)) for i in range(6)}
    assert len(by_epoch) > 1 and len(by_index) > 1


def test_inside_dataset_map_matches_eager():
    aug = TextAugment.from_preset("rocket-augmented")
    captions = [CAPTION, "two dogs play in the park", "an old book on a table"]
    ds = tf.data.Dataset.from_tensor_slices(captions).enumerate()

    def fn(i, text):
        seed = augment.example_seed(7, 1, i, stream=augment.TEXT_STREAM)
        return aug(text, seed)

    mapped = [t.decode() for t in ds.map(fn, num_parallel_calls=2).as_numpy_iterator()]
    eager = [
        aug.augment(
            c, augment.example_seed(7, 1, i, stream=augment.TEXT_STREAM).numpy()
        )
        for i, c in enumerate(captions)
    ]
    assert mapped == eager
    seeds = np.stack([seed_of(i) for i in range(3)])
    batched = aug(tf.constant(captions), seeds).numpy()
    assert batched.shape == (3,)
    assert [b.decode() for b in batched] == [
        aug.augment(c, s) for c, s in zip(captions, seeds, strict=True)
    ]


# === Config ===


@pytest.mark.parametrize("name", augment.TEXT_PRESETS.names())
def test_presets_round_trip_config(name):
    aug = TextAugment.from_preset(name)
    assert TextAugment.from_config(aug.get_config()) == aug


def test_templates_wrap_the_augmented_caption_without_changing_earlier_draws():
    templates = ["a drawing of {}.", "{}, drawn."]
    base = TextAugment(stopword_p=0.5, stopword_unit="word")
    always = TextAugment(
        stopword_p=0.5, stopword_unit="word", templates=templates, template_p=1.0
    )
    never = TextAugment(templates=templates, template_p=0.0, stopword_p=0.0)
    used = set()
    for index in range(40):
        seed = seed_of(index)
        plain = base.augment(CAPTION, seed)
        wrapped = always.augment(CAPTION, seed)
        assert wrapped in {t.replace("{}", plain) for t in templates}
        used.add(wrapped.replace(plain, "{}"))
        assert never.augment(CAPTION, seed) == CAPTION
    assert used == set(templates)
    half = TextAugment.from_preset("templated")
    assert half.templates == list(augment.CAPTION_TEMPLATES) and half.template_p == 0.5
    outs = [half.augment("grinning face", seed_of(i)) for i in range(200)]
    assert 60 < sum(o == "grinning face" for o in outs) < 140
    assert all("grinning face" in o for o in outs)


def test_presets_match_clip_rocket():
    assert TextAugment.from_preset("rocket-global").eda_weights is None
    aug = TextAugment.from_preset("rocket-augmented")
    assert aug.stopword_p == 0.8 and aug.eda_weights == augment.ROCKET_EDA_WEIGHTS
    assert (aug.synonym_n, aug.swap_n, aug.deletion_p) == (1, 1, 0.1)
    none = TextAugment.from_preset("none")
    assert none.augment(CAPTION, seed_of()) == CAPTION


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"stopword_p": 1.5}, "stopword_p"),
        ({"deletion_p": -0.1}, "deletion_p"),
        ({"stopword_unit": "token"}, "stopword_unit"),
        ({"eda_weights": {"insert": 1.0}}, "eda_weights"),
        ({"eda_weights": {"swap": -1.0}}, "eda_weights"),
        ({"eda_weights": {"swap": 0.0}}, "eda_weights"),
        ({"synonym_n": 0}, "synonym_n"),
        ({"stopwords": "the"}, "stopwords"),
        ({"templates": ["a {} of {}"]}, "templates\\[0\\]"),
        ({"templates": "a photo of {}"}, "templates"),
        ({"templates": []}, "templates"),
        ({"template_p": 0.5}, "template_p"),
        ({"templates": ["{}"], "template_p": 2.0}, "template_p"),
    ],
)
def test_bad_arguments_name_the_argument(kwargs, name):
    with pytest.raises(ValueError, match=f"`{name}`"):
        TextAugment(**kwargs)
