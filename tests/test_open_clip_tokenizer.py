"""open_clip's default tokenizer, reproduced by `OpenCLIPTokenizer`.

Token ids through the `ContrastivePreprocessor` the open_clip loader builds
(`lowercase=False`: the tokenizer cleans, then lower-cases) are compared
with `open_clip.tokenize` (tests/open_clip_reference.py, one subprocess for
the module), eagerly and inside `tf.data`, with the shipped BPE and with
`vocab.json` + `merges.txt` in the directory. Tokenisation runs in
TensorFlow whatever the backend, so this runs on one backend (torch).
"""

import html
import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_towers.converters.open_clip import tokenizer as oc_tokenizer
from keras_towers.converters.open_clip.tokenizer import OpenCLIPTokenizer
from keras_towers.converters.open_clip.tokenizer import load_tokenizer
from keras_towers.preprocessing import ContrastivePreprocessor
from tests.open_clip_reference import run_reference

# Tokenisation and image conversion run in TensorFlow (tf.data and eager TF
# ops) whatever the Keras backend, so one backend checks them;
# tests/test_open_clip.py runs the loaded models on all three.
pytestmark = pytest.mark.skipif(
    keras.backend.backend() != "torch",
    reason="backend-independent (TensorFlow preprocessing): checked on torch",
)

LONG = (
    "A very long caption about a dog playing in the park with a red ball while "
    "the sun sets behind the hills and children laugh nearby on a warm summer "
    "evening in the countryside, far away from the noisy lights of the city; "
    "then it rains, the dog runs home, shakes itself dry next to the fire and "
    "falls asleep on the old blue carpet while the cat watches from the sofa"
)
TEXTS = [
    "A photo of the Cat!",
    "",
    "   ",
    "\t\n \u3000\u00a0",
    "two DOGS, 3 cats and 1024 birds. 3.14159 1,000,000 2nd",
    "it's the dog's toy; don't you'll we've I'M",
    "Hello,   World... (42) #tag @user ?!",
    "!!!??? ... --- *** ;;",
    "naïve cafe\u0301 café 日本語の写真 🙂🐱 👨\u200d👩\u200d👧",
    "a\u00a0photo\u3000of\ta\nsquare",
    "İstanbul ΣΑΣ Ünïcödé ß ẞ",
    # Mojibake, and look-alike text that is not.
    "cafÃ© crÃ¨me brÃ»lÃ©e",
    "CAFÃ‰ ðŸ™‚ cafÃƒÂ© voilÃ le Â\u00a0prix",
    "ÐŸÑ€Ð¸Ð²ÐµÑ‚, Ð¼Ð¸Ñ€! Ð° Ð¸ Ñ\x8f",
    "« CAFÉ\u00a0» et «\u00a0thé\u00a0», s’il vous plaît… CAFÉ’S IRMÃ E",
    # HTML entities.
    "fish &amp; chips &lt;b&gt;bold&lt;/b&gt; &quot;q&quot; &#39;x&#39; &#x263A;",
    "&eacute; &EACUTE; &amp;amp;amp;lt; &ampfoo &notit; &#0065; &#128; &#xD800;",
    "<b>tag</b> &amp; &lt; kept? &amp;amp;",
    "line one &amp;amp;\nline <two> &amp;amp;\nline three",
    # ftfy's other fixes.
    "“curly” ‘quotes’ ﬁne ﬂag ＦＵＬＬ\u3000ｗｉｄｔｈ ｶﾀｶﾅ Ǆungla ŉ",
    "\x1b[31mred\x1b[0m ctrl\x00\x07\x1c end \ufeffbom \x85nel \x96dash",
    # open_clip's special tokens are <start_of_text> / <end_of_text>.
    "<start_of_text> <END_OF_TEXT> <|endoftext|> x<end_of_text>y",
    "a red square " * 12,
    LONG,
]


def _preprocessor(tokenizer, pad_id, sequence_length):
    # As the open_clip loader builds it.
    return ContrastivePreprocessor(
        tokenizer=tokenizer,
        sequence_length=sequence_length,
        lowercase=False,
        start_token_id=int(tokenizer.start_token_id),
        end_token_id=int(tokenizer.end_token_id),
        pad_token_id=pad_id,
    )


def _truncate(ids77, length):
    """open_clip's rule, applied to its own untruncated ids: keep `length`
    tokens of [start, text..., end], the last one replaced by end."""
    out = np.zeros((len(ids77), length), "int64")
    for i, row in enumerate(ids77):
        tokens = [t for t in row if t != 0]
        if len(tokens) > length:
            tokens = tokens[:length]
            tokens[-1] = oc_tokenizer.END_TOKEN_ID
        out[i, : len(tokens)] = tokens
    return out


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("open_clip_tokens")
    job = {"tokenize": {"texts": TEXTS, "context_length": 77}}
    return run_reference(job, out)["tokens"]


@pytest.fixture(scope="module")
def shipped(tmp_path_factory):
    """The tokenizer of a directory without tokenizer files."""
    return load_tokenizer(tmp_path_factory.mktemp("no_tokenizer_files"), 77)


def _rows(tokens):
    """Ragged eager output (a `tf.RaggedTensor` or lists) as lists."""
    if hasattr(tokens, "to_list"):
        return tokens.to_list()
    return [list(map(int, row)) for row in tokens]


def _ids(preprocessor, texts):
    return keras.ops.convert_to_numpy(preprocessor({"texts": texts})["token_ids"])


def test_special_ids_and_vocabulary(shipped):
    tokenizer, pad_id = shipped
    assert pad_id == 0
    assert tokenizer.start_token_id == 49406 and tokenizer.end_token_id == 49407
    assert tokenizer.vocabulary_size() == oc_tokenizer.VOCABULARY_SIZE == 49408


def test_ids_match_open_clip(shipped, reference):
    tokenizer, pad_id = shipped
    long_ids = reference[TEXTS.index(LONG)]
    assert long_ids[-1] == oc_tokenizer.END_TOKEN_ID  # truncated at 77
    np.testing.assert_array_equal(
        _ids(_preprocessor(tokenizer, pad_id, 77), TEXTS), reference
    )
    # Context 16: most texts are cut; the last kept token becomes the end.
    short = _ids(_preprocessor(tokenizer, pad_id, 16), TEXTS)
    np.testing.assert_array_equal(short, _truncate(reference, 16))


def test_ids_match_open_clip_in_tf_data(shipped, reference):
    preprocessor = _preprocessor(*shipped, 77)
    ds = tf.data.Dataset.from_tensor_slices(TEXTS).batch(len(TEXTS))
    ds = ds.map(lambda t: preprocessor({"texts": t})["token_ids"])
    np.testing.assert_array_equal(next(iter(ds)).numpy(), reference)


def test_directory_vocab_and_merges_files(tmp_path, shipped, reference):
    tokenizer, _ = shipped
    (tmp_path / "vocab.json").write_text(json.dumps(tokenizer.vocabulary))
    (tmp_path / "merges.txt").write_text(
        "#version: 0.2\n" + "\n".join(tokenizer.merges) + "\n"
    )
    from_files, pad_id = load_tokenizer(tmp_path, 77)
    picked = [0, 8, 11, 15, 21, 23]
    np.testing.assert_array_equal(
        _ids(_preprocessor(from_files, pad_id, 77), [TEXTS[i] for i in picked]),
        reference[picked],
    )
    # Another BPE than open_clip's (which open_clip would ignore) is refused.
    merges = list(tokenizer.merges)
    merges[0], merges[1] = merges[1], merges[0]
    (tmp_path / "merges.txt").write_text("\n".join(merges) + "\n")
    with pytest.raises(ValueError, match="not OpenAI CLIP's BPE"):
        load_tokenizer(tmp_path, 77)


@pytest.mark.parametrize(
    "text_cfg, field",
    [
        ({"hf_tokenizer_name": "timm/ViT-B-16-SigLIP"}, "hf_tokenizer_name"),
        ({"tokenizer_mode": "clips"}, "tokenizer_mode"),
        ({"tokenizer_kwargs": {"clean": "canonicalize"}}, "tokenizer_kwargs"),
        ({"tokenizer_kwargs": {"reduction_mask": "simple"}}, "tokenizer_kwargs"),
        ({"tokenizer_kwargs": {"bpe_path": "x.gz"}}, "tokenizer_kwargs"),
        ({"vocab_size": 32000}, "vocab_size"),
    ],
)
def test_other_tokenizers_are_refused(tmp_path, text_cfg, field):
    config = {"model_cfg": {"embed_dim": 512, "text_cfg": text_cfg}}
    (tmp_path / "open_clip_config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=f"text_cfg.{field}"):
        load_tokenizer(tmp_path, 77)


def test_neutral_tokenizer_kwargs_are_accepted():
    oc_tokenizer.check_tokenizer_config(
        {
            "text_cfg": {
                "hf_tokenizer_name": "",
                "tokenizer_kwargs": {
                    "clean": "lower",
                    "reduction_mask": "",
                    "additional_special_tokens": [],
                },
            }
        }
    )
    with pytest.raises(ValueError, match="context_length"):
        load_tokenizer(".", 1)


def test_html_unescape_matches_python(shipped):
    numbers = [*range(0, 0x120), *range(0xD7FE, 0xE001), *range(0xFDCE, 0xFDF2)]
    numbers += [0xFFFE, 0xFFFF, 0x1FFFE, 0x10FFFF, 0x110000, 10**12]
    refs = [f"&#{n};" for n in numbers] + [f"&#x{n:X}" for n in numbers[::7]]
    refs += ["&#00065;", "&#x0041x", "&#65a", "&#;", "&#x;", "&#X41;"]
    names = ["amp", "lt;", "gt", "AMP;", "Eacute;", "eacute", "notin;", "notit;"]
    names += ["copyx", "nbsp;", "DownArrow;", "NotNestedGreaterGreater;", "bogus;"]
    texts = [" ".join(refs[i : i + 40]) for i in range(0, len(refs), 40)]
    texts += [" ".join("&" + n for n in names), "a & b &; &# &&amp; x&y; &ampamp"]
    cleaner = shipped[0]._cleaner
    got = cleaner.html_unescape(tf.constant(texts)).numpy()
    assert [g.decode() for g in got] == [html.unescape(t) for t in texts]


def test_serialization_round_trip(shipped):
    tokenizer, _ = shipped
    restored = OpenCLIPTokenizer.from_config(tokenizer.get_config())
    restored.set_vocabulary_and_merges(tokenizer.vocabulary, tokenizer.merges)
    texts = ["cafÃ© &amp; <end_of_text>", "A Photo"]
    assert _rows(restored(texts)) == _rows(tokenizer(texts))
