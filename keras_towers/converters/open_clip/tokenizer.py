"""open_clip's default tokenizer (`SimpleTokenizer`), in TensorFlow ops.

open_clip tokenises with OpenAI CLIP's byte-level BPE (49408 ids, start
49406, end 49407, padding 0), like transformers' `CLIPTokenizer`, but cleans
the text differently before splitting it:

1. `ftfy.fix_text`: HTML entities ending in `;` (only on lines before the
   first one holding a `<`), mojibake (UTF-8 read as Windows-1252 or
   Latin-1), C1 controls read as Windows-1252, Latin ligatures, full- and
   half-width forms, curly quotes, terminal escapes, invisible control
   characters, NFC; repeated until nothing changes;
2. `html.unescape` twice (entities with or without `;`, numeric references);
3. Python whitespace collapsed to single spaces, stripped, then lower-cased;
4. split with CLIP's pattern, where `<start_of_text>` and `<end_of_text>` are
   the special tokens (`<|startoftext|>` is ordinary text).

`OpenCLIPTokenizer` reuses `TransformersCLIPTokenizer` (keras-hub's BPE
merging, cache and vocabulary tables) and replaces the text cleaning and the
split, always in TensorFlow ops, so eager calls and `tf.data` give the same
ids on every backend. Unlike transformers, nothing is NFC-normalised after
step 2 ("e&#769;" stays decomposed). Lower-casing must come after the
cleaning (mojibake such as "CAFÃ‰" and entities such as "&DownArrow;" are
case-sensitive): build the `ContrastivePreprocessor` with `lowercase=False`;
the tokenizer lower-cases itself.

ftfy's mojibake detection is heuristic (a "badness" score decides whether
to re-decode), and is not reproduced: here a run of characters that reads as
valid UTF-8 once encoded as Windows-1252/Latin-1 is re-decoded when it holds
two or more encoded characters, starts like the common mojibake of Latin-1,
punctuation, emoji or U+FFFD ("Ã", "Â", "â€", "â„", "ðŸ", "ï¿"), or holds
none of the punctuation that legitimately follows a letter (quotes, dashes,
"…", "«»", U+00A0, ...), so "CAFÉ”" or "café\u00a0»" stay as they are;
in a line where some run was and that is mojibake throughout (its other
characters ASCII), all are (ftfy re-decodes such lines whole).
That fixes ordinary mojibake ("cafÃ©", "ðŸ™‚", "ÐŸÑ€Ð¸Ð²ÐµÑ‚",
double-encoded text) as ftfy does, but may differ from ftfy on text mixing
mojibake with other non-ASCII text; ftfy's rarer fixes (other code pages,
spaces standing for U+00A0 bytes other than in "Â " and "Ã ", UTF-16
surrogates, CESU-8) are not done.
"""

from __future__ import annotations

import functools
import gzip
import html.entities
import json
import os
import unicodedata
from pathlib import Path

import keras
import tensorflow as tf

from keras_towers.converters.transformers_clip.tokenizer import END_TOKEN
from keras_towers.converters.transformers_clip.tokenizer import MERGES_FILE
from keras_towers.converters.transformers_clip.tokenizer import START_TOKEN
from keras_towers.converters.transformers_clip.tokenizer import TOKENIZER_FILE
from keras_towers.converters.transformers_clip.tokenizer import VOCAB_FILE
from keras_towers.converters.transformers_clip.tokenizer import (
    TransformersCLIPTokenizer,
)
from keras_towers.converters.transformers_clip.tokenizer import read_bpe

#: OpenAI CLIP's BPE merges as open_clip ships them (MIT, see BPE_LICENSE).
BPE_FILE = Path(__file__).with_name("bpe_simple_vocab_16e6.txt.gz")
CONFIG_FILE = "open_clip_config.json"
#: Merges open_clip reads from the BPE file (lines 1 to 48894).
NUM_MERGES = 49152 - 256 - 2
#: 256 byte symbols, the same with `</w>`, the merges, start and end.
VOCABULARY_SIZE = 2 * 256 + NUM_MERGES + 2
START_TOKEN_ID = VOCABULARY_SIZE - 2
END_TOKEN_ID = VOCABULARY_SIZE - 1
PAD_TOKEN_ID = 0
#: open_clip's names of the special tokens, matched in the text. The
#: vocabulary keeps transformers' names for the same ids (49406, 49407).
OPEN_CLIP_START = "<start_of_text>"
OPEN_CLIP_END = "<end_of_text>"
SPLIT_PATTERN = (
    rf"{OPEN_CLIP_START}|{OPEN_CLIP_END}|'s|'t|'re|'ve|'m|'ll|'d"
    r"|\p{L}+|\p{N}|[^\s\p{L}\p{N}]+"
)
# `tokenizer_kwargs` of open_clip's `SimpleTokenizer` that keep its ids.
_NEUTRAL_TOKENIZER_KWARGS = {
    "clean": ("lower",),
    "reduction_mask": ("", None),
    "additional_special_tokens": (None, []),
}


# === The BPE ===


def byte_symbols() -> list[str]:
    """The 256 printable symbols standing for bytes, in GPT-2/CLIP order:
    printable Latin-1 bytes as themselves, the rest shifted past U+0100."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    others = [b for b in range(256) if b not in printable]
    return [chr(b) for b in printable] + [chr(256 + i) for i in range(len(others))]


def vocabulary_from_merges(merges: list[str]) -> dict[str, int]:
    """open_clip's vocabulary: byte symbols, byte symbols + `</w>`, each
    merge joined, then the start and end tokens."""
    symbols = byte_symbols()
    tokens = [
        *symbols,
        *(s + "</w>" for s in symbols),
        *("".join(m.split(" ")) for m in merges),
        START_TOKEN,
        END_TOKEN,
    ]
    return {token: i for i, token in enumerate(tokens)}


def read_bpe_file(path: str | os.PathLike = BPE_FILE) -> list[str]:
    """The merges (`"a b"`) open_clip reads from a `bpe_simple_vocab` file."""
    with gzip.open(path, "rt", encoding="utf-8") as file:
        lines = file.read().split("\n")
    merges = lines[1 : NUM_MERGES + 1]
    if len(merges) != NUM_MERGES or any(len(m.split(" ")) != 2 for m in merges):
        raise ValueError(f"{path} is not a CLIP BPE merges file.")
    return merges


def read_open_clip_bpe(path: str | os.PathLike) -> tuple[dict, list]:
    """`(vocabulary, merges)` for an open_clip directory.

    The directory's transformers tokenizer files (`tokenizer.json`, or
    `vocab.json` + `merges.txt`) when it has them, else the BPE shipped with
    keras_towers. open_clip itself always uses its own copy, so directory
    files must be that BPE: a different one raises a `ValueError`.
    """
    path = Path(path)
    has_files = (path / TOKENIZER_FILE).is_file() or (
        (path / VOCAB_FILE).is_file() and (path / MERGES_FILE).is_file()
    )
    if not has_files:
        merges = read_bpe_file(BPE_FILE)
        return vocabulary_from_merges(merges), merges
    vocabulary, merges = read_bpe(path)
    expected = read_bpe_file(BPE_FILE) if BPE_FILE.is_file() else merges
    if merges != expected or vocabulary != vocabulary_from_merges(merges):
        raise ValueError(
            f"The tokenizer files in {str(path)!r} are not OpenAI CLIP's BPE "
            f"({len(vocabulary)} tokens, {len(merges)} merges), which open_clip's "
            "default tokenizer always uses; remove them to use the copy shipped "
            "with keras_towers."
        )
    return vocabulary, merges


def check_tokenizer_config(model_cfg: dict):
    """`ValueError` naming the field if `model_cfg.text_cfg` asks for another
    tokenizer than open_clip's default `SimpleTokenizer`."""
    text_cfg = model_cfg.get("text_cfg") or {}
    if not isinstance(text_cfg, dict):
        raise ValueError(f"open_clip model_cfg.text_cfg must be a dict: {text_cfg!r}")
    name = text_cfg.get("hf_tokenizer_name")
    if name:
        raise ValueError(
            f"open_clip text_cfg.hf_tokenizer_name={name!r}: a Hugging Face "
            "tokenizer is not supported, only open_clip's default CLIP BPE "
            "tokenizer."
        )
    mode = text_cfg.get("tokenizer_mode")
    if mode:
        raise ValueError(
            f"open_clip text_cfg.tokenizer_mode={mode!r} is not supported, only "
            "open_clip's default CLIP BPE tokenizer."
        )
    kwargs = text_cfg.get("tokenizer_kwargs") or {}
    if not isinstance(kwargs, dict):
        raise ValueError(
            f"open_clip text_cfg.tokenizer_kwargs must be a dict: {kwargs!r}"
        )
    for key, value in kwargs.items():
        if key not in _NEUTRAL_TOKENIZER_KWARGS or (
            value not in _NEUTRAL_TOKENIZER_KWARGS[key]
        ):
            raise ValueError(
                f"open_clip text_cfg.tokenizer_kwargs[{key!r}]={value!r} is not "
                "supported: it changes open_clip's default tokenization. "
                "Supported: "
                + ", ".join(
                    f"{k}={v[0]!r}" for k, v in _NEUTRAL_TOKENIZER_KWARGS.items()
                )
                + "."
            )
    vocab_size = text_cfg.get("vocab_size", VOCABULARY_SIZE)
    if int(vocab_size) < VOCABULARY_SIZE:
        raise ValueError(
            f"open_clip text_cfg.vocab_size={vocab_size} is smaller than the "
            f"CLIP BPE tokenizer's {VOCABULARY_SIZE} ids."
        )


# === Text cleaning (ftfy.fix_text + html.unescape, as open_clip applies them) ===

_KEEP = "\uffff<keep>"  # lookup default: not a replacement of any table
# ftfy's Latin ligatures: replaced by their compatibility decomposition.
_LIGATURES = [0x132, 0x133, 0x149, *range(0x1C4, 0x1CD), *range(0x1F1, 0x1F4)]
_LIGATURES += list(range(0xFB00, 0xFB07))
# Characters ftfy deletes (invisible controls, bidi overrides, BOM, ...).
_CONTROLS = [*range(0x00, 0x09), 0x0B, *range(0x0E, 0x20), 0x7F]
_CONTROLS += [*range(0x206A, 0x2070), 0xFEFF, *range(0xFFF9, 0xFFFD)]
_TERMINAL_ESCAPE = r"\x1b\[[0-9;]*[a-zA-Z]"
_FTFY_ENTITY = r"&#?[0-9A-Za-z]{1,24};"
_HTML_CHARREF = r"&(?:#[0-9]+;?|#[xX][0-9a-fA-F]+;?|[^\t\n\f <&#;]{1,32};?)"
_NUMERIC_CHARREF = r"&#(?:[0-9]+|[xX][0-9a-fA-F]+);?"
_MAX_FTFY_ROUNDS = 16
# Layers of mojibake undone before the other fixes (ftfy loops to a fixed
# point there; the outer rounds catch deeper ones).
_MOJIBAKE_LAYERS = 3
# Text that ftfy and `html.unescape` leave unchanged: printable ASCII (and
# tab, line breaks) without "&".
_PLAIN_ASCII = r"[\t\n\f\r\x20-\x25\x27-\x7e]*"
_AFTER_NON_CAPITAL = r"(^|[^\p{Lu}])"
# Mojibake decoded even as a single character: the usual look of UTF-8 read
# as Windows-1252 for Latin-1 letters and symbols, punctuation, letter-like
# symbols, emoji and U+FFFD.
_MOJIBAKE_PREFIXES = ("Ã", "Â", "â€", "â„", "ðŸ", "ï¿")
# Windows-1252 characters that follow letters in ordinary text ("CAFÉ”",
# "café\u00a0»"): a lone sequence with one of these is left alone.
_PUNCTUATION_AFTER_LETTERS = "\u00a0’‘”“…–—•·«»‹›™®©°¡¿²³¹ªº\u00ad§¶"


def _regex_class(codepoints) -> str:
    """A RE2 character class of `codepoints`, as ranges."""
    points = sorted(set(codepoints))
    parts, start = [], None
    for i, point in enumerate(points):
        if start is None:
            start = point
        if i + 1 == len(points) or points[i + 1] != point + 1:
            if point == start:
                parts.append(f"\\x{{{start:x}}}")
            else:
                parts.append(f"\\x{{{start:x}}}-\\x{{{point:x}}}")
            start = None
    return "[" + "".join(parts) + "]"


def _windows_1252(byte: int) -> str:
    """`byte` decoded as Windows-1252, undefined bytes as Latin-1 (ftfy's
    "sloppy" codec, also what browsers and `html.unescape` do)."""
    try:
        return bytes([byte]).decode("cp1252")
    except UnicodeDecodeError:
        return chr(byte)


@functools.cache
def _char_fixes() -> dict[str, str]:
    """ftfy's per-character fixes, composed in its order: C1 controls as
    Windows-1252, Latin ligatures, full/half-width forms, curly quotes."""
    c1 = {chr(b): _windows_1252(b) for b in range(0x80, 0xA0)}
    ligatures = {
        chr(c): "".join(
            chr(int(h, 16)) for h in unicodedata.decomposition(chr(c)).split()[1:]
        )
        for c in _LIGATURES
    }
    width = {"\u3000": " "}
    for c in range(0xFF01, 0xFFF0):
        normal = unicodedata.normalize("NFKC", chr(c))
        if normal != chr(c):
            width[chr(c)] = normal
    quotes = {chr(c): "'" for c in [0x2BC, *range(0x2018, 0x201C)]}
    quotes.update({chr(c): '"' for c in range(0x201C, 0x2020)})
    stages = [c1, ligatures, width, quotes]
    fixes = {}
    for char in set().union(*stages):
        out = char
        for stage in stages:
            out = "".join(stage.get(c, c) for c in out)
        if out != char:
            fixes[char] = out
    return fixes


def _byte_chars(low: int, high: int) -> list[int]:
    """Code points that Windows-1252 or Latin-1 decode bytes `low..high` to."""
    points = []
    for byte in range(low, high + 1):
        points.append(byte)
        if 0x80 <= byte < 0xA0:
            points.append(ord(_windows_1252(byte)))
    return points


@functools.cache
def _mojibake_pattern() -> str:
    """Runs of characters that encode (Windows-1252/Latin-1) to valid UTF-8
    multi-byte sequences."""

    def c(low, high):
        return _regex_class(_byte_chars(low, high))

    cont = c(0x80, 0xBF)
    sequences = [
        c(0xC2, 0xDF) + cont,
        c(0xE0, 0xE0) + c(0xA0, 0xBF) + cont,
        c(0xE1, 0xEC) + cont * 2,
        c(0xED, 0xED) + c(0x80, 0x9F) + cont,
        c(0xEE, 0xEF) + cont * 2,
        c(0xF0, 0xF0) + c(0x90, 0xBF) + cont * 2,
        c(0xF1, 0xF3) + cont * 3,
        c(0xF4, 0xF4) + c(0x80, 0x8F) + cont * 2,
    ]
    return "(?:" + "|".join(sequences) + ")+"


@functools.cache
def _ftfy_entities() -> dict[str, str]:
    """ftfy's HTML entities: `&name;` of HTML5, plus the upper-cased name of
    all-lower-case ones that are not entities themselves (`&EACUTE;`)."""
    entities = {}
    for name, char in html.entities.html5.items():
        if name.endswith(";"):
            entities["&" + name] = char
            upper = name.upper()
            if name == name.lower() and not _is_html_entity("&" + upper):
                entities["&" + upper] = char.upper()
    return entities


def _is_html_entity(text: str) -> bool:
    return html.unescape(text) != text


def _invalid_code_point(cp):
    """Code points `html.unescape` drops: controls, noncharacters."""
    return (
        ((cp >= 0x1) & (cp <= 0x8))
        | (cp == 0xB)
        | ((cp >= 0xE) & (cp <= 0x1F))
        | ((cp >= 0x7F) & (cp <= 0x9F))
        | ((cp >= 0xFDD0) & (cp <= 0xFDEF))
        | (((cp & 0xFFFE) == 0xFFFE) & (cp <= 0x10FFFF))
    )


def _static_table(mapping: dict, key_dtype, value_dtype, default):
    keys = list(mapping)
    values = [mapping[k] for k in keys]
    return tf.lookup.StaticHashTable(
        tf.lookup.KeyValueTensorInitializer(
            tf.constant(keys, key_dtype), tf.constant(values, value_dtype)
        ),
        default_value=default,
    )


def _apply_where(texts, mask, fn):
    """`fn` applied to the strings where `mask` holds; the others kept."""
    positions = tf.range(tf.shape(texts)[0])
    hit = tf.boolean_mask(positions, mask)
    miss = tf.boolean_mask(positions, tf.logical_not(mask))
    changed = fn(tf.gather(texts, hit))
    return tf.dynamic_stitch([miss, hit], [tf.gather(texts, miss), changed])


def _repeat(fn, texts, times: int, until_unchanged: bool = True):
    """`fn` applied `times` times (fewer once nothing changes), in one
    `tf.while_loop` so that its ops are built once."""

    def not_done(i, texts, done):
        return (i < times) & ~done

    def step(i, texts, done):
        new = fn(texts)
        unchanged = tf.reduce_all(tf.equal(new, texts)) if until_unchanged else done
        return i + 1, new, unchanged

    return tf.while_loop(not_done, step, (tf.constant(0), texts, tf.constant(False)))[1]


def _contains(texts, pattern: str):
    return tf.strings.regex_full_match(texts, f"(?s).*(?:{pattern}).*")


def _replace_matches(texts, pattern: str, fn):
    """Every match of `pattern` in `texts` replaced by `fn(matches)` (one
    string each), scanning left to right like `re.sub`."""
    import tensorflow_text as tf_text

    def replace(subset):
        pieces = tf_text.regex_split(subset, pattern, pattern)
        flat = pieces.flat_values
        match = tf.strings.regex_full_match(flat, pattern)
        return tf.strings.reduce_join(
            pieces.with_flat_values(_apply_where(flat, match, fn)), axis=-1
        )

    return _apply_where(texts, _contains(texts, pattern), replace)


@functools.cache
def _whitespace_class() -> str:
    """Python's whitespace (`str.split()`), as a RE2 class."""
    return _regex_class(c for c in range(0x110000) if chr(c).isspace())


class _OpenCLIPTextCleaner:
    """open_clip's `_clean_lower`, in TensorFlow ops (see the module doc).

    Holds its lookup tables, created eagerly (a table created while tracing
    `tf.data` would belong to that graph only).
    """

    def __init__(self):
        fixes = _char_fixes()
        self.char_class = _regex_class(ord(c) for c in fixes)
        self.char_fixes = _static_table(fixes, tf.string, tf.string, _KEEP)
        self.control_class = _regex_class(_CONTROLS)
        self.whitespace_class = _whitespace_class()
        self.mojibake = _mojibake_pattern()
        self.punctuation_class = _regex_class(map(ord, _PUNCTUATION_AFTER_LETTERS))
        self.not_lead_class = "[^" + _regex_class(_byte_chars(0xC2, 0xF4))[1:]
        to_bytes = {}
        for byte in range(0x80, 0x100):
            for char in {chr(byte), _windows_1252(byte)}:
                to_bytes[char.encode()] = bytes([byte])
        self.mojibake_bytes = _static_table(to_bytes, tf.string, tf.string, b"")
        self.html5 = _static_table(
            {k.encode(): v.encode() for k, v in html.entities.html5.items()},
            tf.string,
            tf.string,
            _KEEP,
        )
        self.max_bare_name = max(
            len(k) for k in html.entities.html5 if not k.endswith(";")
        )
        self.ftfy_entities = _static_table(
            {k.encode(): v.encode() for k, v in _ftfy_entities().items()},
            tf.string,
            tf.string,
            _KEEP,
        )
        charrefs = {0x00: "\ufffd", 0x0D: "\r"}
        charrefs.update({b: _windows_1252(b) for b in range(0x80, 0xA0)})
        self.charrefs = _static_table(
            {k: v.encode() for k, v in charrefs.items()}, tf.int64, tf.string, _KEEP
        )

    # --- HTML ---

    def _numeric(self, refs):
        """`&#65;` / `&#x41` (`;` optional) -> the character, by
        `html.unescape`'s rules."""
        body = tf.strings.regex_replace(refs, r"^&#|;$", "")
        is_hex = tf.strings.regex_full_match(body, "[xX].*")
        digits = tf.strings.regex_replace(body, "^[xX]?0*", "")
        length = tf.strings.length(digits)
        too_big = length > tf.where(is_hex, 6, 7)
        digits = tf.where(too_big | (length == 0), "0", digits)
        codes = tf.strings.unicode_decode(digits, "UTF-8")
        rows = tf.cast(codes.value_rowids(), tf.int32)
        values = tf.cast(codes.flat_values, tf.int64)
        values = tf.where(
            values <= 57, values - 48, tf.bitwise.bitwise_or(values, 32) - 87
        )
        base = tf.gather(tf.where(is_hex, tf.constant(16, tf.int64), 10), rows)
        lengths = tf.cast(codes.row_lengths(), tf.int32)
        position = tf.range(tf.shape(rows)[0]) - tf.gather(
            tf.cast(codes.row_starts(), tf.int32), rows
        )
        exponent = tf.cast(tf.gather(lengths, rows) - 1 - position, tf.int64)
        number = tf.math.unsorted_segment_sum(
            values * tf.pow(base, exponent), rows, tf.shape(refs)[0]
        )
        number = tf.where(too_big, tf.constant(0x110000, tf.int64), number)
        out_of_range = ((number >= 0xD800) & (number <= 0xDFFF)) | (number > 0x10FFFF)
        valid = ~out_of_range & ~_invalid_code_point(number)
        safe = tf.cast(tf.where(valid, number, 0x41), tf.int32)
        chars = tf.strings.unicode_encode(tf.expand_dims(safe, -1), "UTF-8")
        chars = tf.where(valid, chars, "")
        chars = tf.where(out_of_range, "\ufffd", chars)
        special = self.charrefs.lookup(number)
        return tf.where(special != _KEEP, special, chars)

    def _named(self, refs):
        """`&name;` / `&name` -> `html.unescape`'s replacement: the entity,
        else the longest bare (`;`-less) entity prefixing the name."""
        name = tf.strings.regex_replace(refs, "^&", "")
        full = self.html5.lookup(name)
        found = full != _KEEP
        out = tf.where(found, full, refs)
        size = tf.strings.length(name, unit="UTF8_CHAR")
        for length in range(self.max_bare_name, 1, -1):
            start = tf.minimum(length, size)
            prefix = tf.strings.substr(
                name, tf.zeros_like(size), start, unit="UTF8_CHAR"
            )
            rest = tf.strings.substr(name, start, size - start, unit="UTF8_CHAR")
            hit = self.html5.lookup(prefix)
            use = ~found & (length <= size - 1) & (hit != _KEEP)
            out = tf.where(use, tf.strings.join([hit, rest]), out)
            found = found | use
        return out

    def _html_ref(self, refs):
        numeric = tf.strings.regex_full_match(refs, _NUMERIC_CHARREF)
        return _apply_where(
            _apply_where(refs, numeric, self._numeric), ~numeric, self._named
        )

    def html_unescape(self, texts):
        """`html.unescape`."""
        return _replace_matches(texts, _HTML_CHARREF, self._html_ref)

    def _ftfy_ref(self, refs):
        named = self.ftfy_entities.lookup(refs)
        out = tf.where(named != _KEEP, named, refs)
        numeric = tf.strings.regex_full_match(refs, _NUMERIC_CHARREF)
        decoded = _apply_where(refs, numeric, self._numeric)
        return tf.where(numeric & (decoded != ";"), decoded, out)

    # --- ftfy ---

    def _fix_chars(self, texts):
        chars = tf.strings.unicode_split(texts, "UTF-8")
        flat = chars.flat_values
        fixed = self.char_fixes.lookup(flat)
        flat = tf.where(fixed == _KEEP, flat, fixed)
        return tf.strings.reduce_join(chars.with_flat_values(flat), axis=-1)

    def _decode_runs(self, runs):
        """Runs of UTF-8 read as Windows-1252 -> the characters they encode."""
        chars = tf.strings.unicode_split(runs, "UTF-8")
        raw = chars.with_flat_values(self.mojibake_bytes.lookup(chars.flat_values))
        return tf.strings.reduce_join(raw, axis=-1)

    def _decode_likely_runs(self, runs):
        """`_decode_runs` where a run looks like mojibake rather than a
        letter and punctuation (see the module doc)."""
        leads = tf.strings.regex_replace(runs, self.not_lead_class, "")
        several = tf.strings.length(leads, unit="UTF8_CHAR") >= 2
        prefix = "|".join(_MOJIBAKE_PREFIXES)
        typical = tf.strings.regex_full_match(runs, f"(?s)(?:{prefix}).*")
        punctuation = _contains(runs, self.punctuation_class)
        likely = several | typical | ~punctuation
        return _apply_where(runs, likely, self._decode_runs)

    def _restore_spaces(self, texts):
        """ "Ã " -> "à ", "Â " -> U+00A0 (mojibake whose U+00A0 byte became
        a space), except after a capital ("IRMÃ E" is Portuguese)."""
        texts = tf.strings.regex_replace(texts, _AFTER_NON_CAPITAL + "Ã ", r"\1à ")
        return tf.strings.regex_replace(texts, _AFTER_NON_CAPITAL + "Â ", "\\1\u00a0")

    def _decode_all(self, texts):
        texts = self._restore_spaces(texts)
        return _replace_matches(texts, self.mojibake, self._decode_runs)

    def _fix_mojibake(self, texts):
        """Likely mojibake decoded, and then "Ã "/"Â " restored on that line.
        A line that is mojibake throughout (its other characters ASCII) and
        has some is decoded whole, as ftfy does."""
        suspect = _contains(texts, self.mojibake) | _contains(texts, "[ÃÂ] ")
        return _apply_where(texts, suspect, self._fix_suspect_mojibake)

    def _fix_suspect_mojibake(self, texts):
        fixed = _replace_matches(texts, self.mojibake, self._decode_likely_runs)
        changed = tf.not_equal(fixed, texts)
        fixed = _apply_where(fixed, changed, self._restore_spaces)
        rest = tf.strings.regex_replace(texts, self.mojibake, "")
        rest = tf.strings.regex_replace(rest, "[ÃÂ] ", "")
        whole = tf.strings.regex_full_match(rest, r"(?s)[\x00-\x7f]*")
        spaced = _contains(texts, _AFTER_NON_CAPITAL + "[ÃÂ] ")
        whole = whole & (changed | spaced)
        return tf.where(whole, _apply_where(texts, whole, self._decode_all), fixed)

    def _ftfy_round(self, segments, unescape):
        """One round of `ftfy.fix_and_explain` on lines (`unescape`: HTML
        entities are decoded on that line)."""
        import tensorflow_text as tf_text

        segments = _apply_where(
            segments,
            unescape,
            lambda s: _replace_matches(s, _FTFY_ENTITY, self._ftfy_ref),
        )
        segments = _repeat(self._fix_mojibake, segments, _MOJIBAKE_LAYERS)
        segments = _apply_where(
            segments, _contains(segments, self.char_class), self._fix_chars
        )
        segments = tf.strings.regex_replace(segments, _TERMINAL_ESCAPE, "")
        segments = tf.strings.regex_replace(segments, self.control_class, "")
        return tf_text.normalize_utf8(segments, "NFC")

    def fix_text(self, texts):
        """`ftfy.fix_text` (the parts described in the module doc)."""
        lines = tf.strings.split(texts, "\n")
        flat = lines.flat_values
        # ftfy stops decoding entities from the first line with a "<" on.
        has_tag = tf.cast(_contains(flat, "<"), tf.int32)
        total = tf.cumsum(has_tag)
        rows = lines.value_rowids()
        before = tf.gather(total - has_tag, tf.gather(lines.row_starts(), rows))
        unescape = (total - before) == 0

        flat = _repeat(
            lambda segments: self._ftfy_round(segments, unescape),
            flat,
            _MAX_FTFY_ROUNDS,
        )
        return tf.strings.reduce_join(
            lines.with_flat_values(flat), axis=-1, separator="\n"
        )

    def _fix_and_unescape(self, texts):
        # NUL (which ftfy deletes) ends strings for RE2 and ICU ops.
        texts = tf.strings.regex_replace(texts, "\\x00", "")
        texts = self.fix_text(texts)
        return _repeat(self.html_unescape, texts, 2, until_unchanged=False)

    def clean(self, texts):
        """open_clip's `_clean_lower`: `fix_text`, `html.unescape` twice,
        whitespace collapsed and stripped, lower case."""
        # Printable ASCII without "&" is left as it is by ftfy and unescape.
        plain = tf.strings.regex_full_match(texts, _PLAIN_ASCII)
        texts = _apply_where(texts, ~plain, self._fix_and_unescape)
        texts = tf.strings.regex_replace(texts, self.whitespace_class + "+", " ")
        texts = tf.strings.regex_replace(texts, "^ | $", "")
        return tf.strings.lower(texts, encoding="utf-8")


@keras.saving.register_keras_serializable(package="keras_towers")
class OpenCLIPTokenizer(TransformersCLIPTokenizer):
    """open_clip's default tokenizer (`open_clip.tokenize`), eagerly and in
    `tf.data`.

    The vocabulary and merges are OpenAI CLIP's BPE, as for transformers'
    `CLIPTokenizer`; the text is cleaned as open_clip's `SimpleTokenizer`
    cleans it (ftfy and HTML unescaping, whitespace, lower case; see
    `keras_towers.converters.open_clip.tokenizer`) and split with its
    pattern, whose special tokens are `<start_of_text>` and `<end_of_text>`.
    Both eager calls and `tf.data` run the same TensorFlow ops. It
    lower-cases itself: use it with `ContrastivePreprocessor(lowercase=False)`
    (lower-casing first would hide upper-case mojibake and entities).

    Args:
        vocabulary: dict or path of `vocab.json`.
        merges: list or path of `merges.txt`.

    Example:

    ```python
    tokenizer, pad_id = load_tokenizer("/path/to/open_clip_dir", 77)
    tokenizer(["a photo of a caf&eacute;"])  # [[320, 1125, 539, 320, 15304]]
    ```
    """

    def __init__(self, vocabulary=None, merges=None, **kwargs):
        super().__init__(vocabulary=vocabulary, merges=merges, **kwargs)
        self._cleaner = _OpenCLIPTextCleaner()

    # Every symbol is in the byte-level vocabulary (`read_open_clip_bpe`
    # accepts only OpenAI CLIP's BPE): no unknown-token mapping.
    unknown_to_end_token = False

    def clean_texts(self, texts):
        """The texts as open_clip's tokenizer sees them before splitting."""
        return self._clean_tf(tf.convert_to_tensor(texts))

    def tokenize(self, inputs):
        # keras-hub runs the `tokenizers` library eagerly; open_clip's
        # cleaning exists only here, so eager calls take the TF path too.
        self._check_vocabulary()
        return self._tokenize_tf(inputs)

    def _clean_tf(self, texts):
        return self._cleaner.clean(texts)

    def _split_tf(self, texts):
        """open_clip's pattern; its special tokens `<start_of_text>` and
        `<end_of_text>` become the vocabulary's start and end tokens."""
        import tensorflow_text as tf_text

        # Keep the matches; the pieces between them are single spaces.
        words = tf_text.regex_split(texts, SPLIT_PATTERN, SPLIT_PATTERN)
        words = tf.ragged.boolean_mask(words, tf.strings.strip(words) != "")
        flat = words.flat_values
        flat = tf.where(flat == OPEN_CLIP_START, START_TOKEN, flat)
        flat = tf.where(flat == OPEN_CLIP_END, END_TOKEN, flat)
        return words.with_flat_values(flat)


def load_tokenizer(
    path: str | os.PathLike, context_length: int, model_cfg: dict | None = None
) -> tuple[OpenCLIPTokenizer, int]:
    """open_clip's default tokenizer for a checkpoint directory, and its
    padding id (0).

    Args:
        path: the directory. Its `vocab.json` + `merges.txt` (or
            `tokenizer.json`) are used when present (they must be OpenAI
            CLIP's BPE, as open_clip always uses it), else the BPE shipped
            with keras_towers.
        context_length: int. The text context (`text_cfg.context_length`),
            checked to hold at least the start and end tokens; packing to it
            is the `ContrastivePreprocessor`'s.
        model_cfg: open_clip's `model_cfg`, read from
            `open_clip_config.json` in `path` when not given. A tokenizer
            other than the default one (`text_cfg.hf_tokenizer_name`,
            `tokenizer_mode`, `tokenizer_kwargs` that change ids) raises a
            `ValueError` naming the field.

    Example:

    ```python
    tokenizer, pad_id = load_tokenizer("/path/to/open_clip_dir", 77)
    preprocessor = keras_towers.ContrastivePreprocessor(
        tokenizer=tokenizer, sequence_length=77, lowercase=False,
        start_token_id=tokenizer.start_token_id,
        end_token_id=tokenizer.end_token_id, pad_token_id=pad_id,
    )
    ```
    """
    path = Path(path)
    if isinstance(context_length, bool) or int(context_length) < 2:
        raise ValueError(
            f"context_length must be an int >= 2 (start and end tokens). "
            f"Received: {context_length!r}."
        )
    if model_cfg is None and (path / CONFIG_FILE).is_file():
        config = json.loads((path / CONFIG_FILE).read_text(encoding="utf-8"))
        model_cfg = config.get("model_cfg") if isinstance(config, dict) else None
    if model_cfg:
        check_tokenizer_config(model_cfg)
    vocabulary, merges = read_open_clip_bpe(path)
    tokenizer = OpenCLIPTokenizer(vocabulary=vocabulary, merges=merges)
    return tokenizer, PAD_TOKEN_ID
