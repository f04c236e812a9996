"""WordNet synonyms read from the WordNet 3.0 database files, offline.

The files are those of the Debian package `wordnet-base` (installed by
`scripts/setup.sh`) under `/usr/share/wordnet`: `index.<pos>` maps a lemma
to its synset byte offsets, `data.<pos>` holds one synset per line at those
offsets, and `<pos>.exc` lists irregular inflections. They are read lazily
(an index on the first lookup of its part of speech) and lookups are cached.
Inflected words are reduced to base forms with WordNet's own "morphy" rules
(its exception lists, then its suffix substitutions; see the `morphy(7WN)`
manual page), so "cars" finds the synsets of "car".
"""

from __future__ import annotations

import functools
import os
import re
import threading

#: Where Debian's `wordnet-base` installs the database; override with the
#: `KERAS_TOWERS_WORDNET_DIR` environment variable or `WordNet(path)`.
DEFAULT_WORDNET_DIR = "/usr/share/wordnet"
PARTS_OF_SPEECH = ("noun", "verb", "adj", "adv")
_EXCEPTION_FILES = {"noun": "noun.exc", "verb": "verb.exc", "adj": "adj.exc"}
# WordNet's morphy suffix substitutions (detachment rules), per part of speech.
_SUFFIX_RULES = {
    "noun": (
        ("s", ""), ("ses", "s"), ("ves", "f"), ("xes", "x"), ("zes", "z"),
        ("ches", "ch"), ("shes", "sh"), ("men", "man"), ("ies", "y"),
    ),
    "verb": (
        ("s", ""), ("ies", "y"), ("es", "e"), ("es", ""),
        ("ed", "e"), ("ed", ""), ("ing", "e"), ("ing", ""),
    ),
    "adj": (("er", ""), ("est", ""), ("er", "e"), ("est", "e")),
    "adv": (),
}  # fmt: skip
_MARKER = re.compile(r"\([a-z]+\)$")
_NOT_LETTER = re.compile(r"[^a-z ]")


def wordnet_dir() -> str:
    return os.environ.get("KERAS_TOWERS_WORDNET_DIR", DEFAULT_WORDNET_DIR)


def missing_files(path: str) -> list[str]:
    """The database files missing under `path` (empty when complete)."""
    names = [f"{kind}.{pos}" for pos in PARTS_OF_SPEECH for kind in ("index", "data")]
    return [n for n in names if not os.path.isfile(os.path.join(path, n))]


def check_installed(path: str | None = None) -> str:
    """`path` (default `wordnet_dir()`) if it holds WordNet, else a clear error."""
    path = path or wordnet_dir()
    missing = missing_files(path)
    if missing:
        raise FileNotFoundError(
            f"WordNet database files not found under {path!r} (missing: "
            f"{', '.join(missing)}). Synonym replacement reads WordNet 3.0 "
            "offline: install the Debian package `wordnet-base` "
            "(`apt-get install wordnet-base`, as `scripts/setup.sh` does), or "
            "point `KERAS_TOWERS_WORDNET_DIR` at a directory with its files."
        )
    return path


class WordNet:
    """Lazy reader of a WordNet 3.0 database directory.

    Args:
        path: str. Directory with `index.*`, `data.*` and `*.exc` files;
            default `wordnet_dir()`.

    Example:

    ```python
    wn = keras_towers.augment.wordnet.WordNet()
    wn.synonyms("car")  # ("auto", "automobile", ..., "railcar", ...)
    ```
    """

    def __init__(self, path: str | None = None):
        self.path = check_installed(path)
        self._lock = threading.Lock()
        self._index: dict[str, dict[str, tuple[int, ...]]] = {}
        self._data: dict[str, bytes] = {}
        self._exceptions: dict[str, dict[str, tuple[str, ...]]] = {}
        self.synonyms = functools.lru_cache(maxsize=65536)(self._synonyms)

    def _file(self, name: str) -> str:
        return os.path.join(self.path, name)

    def index(self, pos: str) -> dict[str, tuple[int, ...]]:
        """lemma -> synset offsets in `data.<pos>`."""
        with self._lock:
            if pos not in self._index:
                table = {}
                with open(self._file(f"index.{pos}"), encoding="utf-8") as f:
                    for line in f:
                        if line.startswith(" "):  # licence header
                            continue
                        parts = line.split()
                        count = int(parts[2])
                        table[parts[0]] = tuple(int(o) for o in parts[-count:])
                self._index[pos] = table
            return self._index[pos]

    def data(self, pos: str) -> bytes:
        with self._lock:
            if pos not in self._data:
                with open(self._file(f"data.{pos}"), "rb") as f:
                    self._data[pos] = f.read()
            return self._data[pos]

    def exceptions(self, pos: str) -> dict[str, tuple[str, ...]]:
        """inflected form -> base forms (`<pos>.exc`)."""
        with self._lock:
            if pos not in self._exceptions:
                table = {}
                name = _EXCEPTION_FILES.get(pos)
                if name and os.path.isfile(self._file(name)):
                    with open(self._file(name), encoding="utf-8") as f:
                        for line in f:
                            parts = line.split()
                            if len(parts) >= 2:
                                table[parts[0]] = tuple(parts[1:])
                self._exceptions[pos] = table
            return self._exceptions[pos]

    def base_forms(self, word: str, pos: str) -> list[str]:
        """The lemmas of `pos` that `word` may be a form of (morphy)."""
        word = word.lower().replace(" ", "_")
        forms = [word, *self.exceptions(pos).get(word, ())]
        if word not in self.exceptions(pos):
            forms += [
                word[: -len(old)] + new
                for old, new in _SUFFIX_RULES[pos]
                if word.endswith(old) and len(word) > len(old)
            ]
        index = self.index(pos)
        return [f for f in dict.fromkeys(forms) if f in index]

    def synset_lemmas(self, pos: str, offset: int) -> list[str]:
        """The lemmas of the synset at byte `offset` of `data.<pos>`."""
        blob = self.data(pos)
        end = blob.find(b"\n", offset)
        parts = blob[offset : end if end >= 0 else None].decode("utf-8").split()
        count = int(parts[3], 16)
        return [_MARKER.sub("", parts[4 + 2 * i]) for i in range(count)]

    def _synonyms(self, word: str) -> tuple[str, ...]:
        """Sorted lemmas sharing a synset with `word`, normalised as EDA does.

        Underscores and hyphens become spaces, text is lowercased, characters
        other than `a-z` and space are dropped, and `word` itself is removed.
        """
        word = word.lower()
        found = set()
        for pos in PARTS_OF_SPEECH:
            for form in self.base_forms(word, pos):
                for offset in self.index(pos)[form]:
                    for lemma in self.synset_lemmas(pos, offset):
                        text = lemma.replace("_", " ").replace("-", " ").lower()
                        text = _NOT_LETTER.sub("", text).strip()
                        if text:
                            found.add(text)
        found.discard(word)
        return tuple(sorted(found))


_DEFAULT: dict[str, WordNet] = {}
_DEFAULT_LOCK = threading.Lock()


def default_wordnet(path: str | None = None) -> WordNet:
    """One shared `WordNet` per directory (parsed once per process)."""
    path = path or wordnet_dir()
    with _DEFAULT_LOCK:
        if path not in _DEFAULT:
            _DEFAULT[path] = WordNet(path)
        return _DEFAULT[path]
