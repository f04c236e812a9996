"""OpenClipart as a corpus source: its package, metadata parsing and listing.

The Debian `openclipart-svg` 1:0.18+dfsg-19 package (`OPENCLIPART`, public
domain), read without an XML parser (`parse_metadata`, `read_svg_metadata`),
its titles and keywords cleaned into captions and tags (`clean_title`,
`openclipart_caption`, `clean_keywords`), non-English titles detected
(`looks_non_english`), and the listing (`openclipart_listing`) that
`keras_towers.datasets.clipart.SOURCES["openclipart"]` serves. Nothing here
renders: each item's `svg` is the file's path.

OpenClipart (`openclipart_listing`): one item per `.svg` file below
`/usr/share/openclipart/svg` (`$KERAS_TOWERS_OPENCLIPART_DIR` overrides),
captioned by the `dc:title` of its RDF metadata, with its `dc:subject`
keywords as tags and its top folder as category. Metadata is read from the
first 16 KB of each file (it ends by byte 5,300 in every file of the Debian
package) with regular expressions: no XML parser, so no entity is ever
expanded beyond XML's five predefined ones and character references. What is
skipped, in this order:

- `symlink`: the package links 663 paths to files under other folders.
- `not_public_domain`: a `cc:license` naming another licence (two GPL-2.0
  network icons). Files that name no licence stay: the package's copyright
  file dedicates the whole collection to the public domain.
- `no_metadata`: no RDF `Work` (none in the Debian package).
- `collection_title`: a title naming the collection rather than the picture
  (`COLLECTION_TITLES`: "gramastar", "Lemon SVG theme", "card", "Etiquette
  Icons"; `COLLECTION_TITLE_PREFIXES`: "Part of the Flat Icon Collection
  ...", "Clipart by Nicu Buculei - ..."), whatever its count.
- `untitled`: a title that is empty, a placeholder ("untitled", "image"), or
  holds no two letters in a row once cleaned ("70a001"). Titles written as
  file names are cleaned rather than skipped (`clean_title`):
  `"Aircraft1"` -> `"aircraft"`, `"Switch_Cisco_6500"` ->
  `"switch cisco 6500"`, `"redRoundButton"` -> `"red round button"`.
- `bulk_title`: a title (after cleaning, compared by `caption_key`) carried
  by more than `MAX_TITLE_REPEATS` files.
- `non_english`: with `english_only` (the default), a title that looks
  Italian, French, Spanish, Portuguese, Polish or German
  (`looks_non_english`); flag captions (place names) are exempt.
- `duplicate_artwork`: the same drawing filed under two folders (the bytes
  outside `<metadata>` are identical); the first path is kept, with the
  others' keywords among its tags.

Captions (`openclipart_caption`) drop a "Clipart by <name> - " prefix and
the author's name, keep the English side of a bilingual title ("farfalla -
butterfly"), and in a `flags` folder read "flag: <title>" ("flag: rwanda"),
as the emoji sets caption flags, so both land in one concept. Files sharing a
caption within the limit are all kept: they group into one concept.
Keywords are cleaned: junk such as `hash(0x8a07724)`, numbers, taxonomy
jargon (`JUNK_KEYWORDS`) and the author's own name are dropped.
"""

from __future__ import annotations

import codecs
import collections
import hashlib
import html.entities
import os
import re
from pathlib import Path

from keras_towers.datasets import paths
from keras_towers.datasets.sources import Package

# === Package ===

OPENCLIPART_DIR_ENV = "KERAS_TOWERS_OPENCLIPART_DIR"
DEFAULT_OPENCLIPART_DIR = "/usr/share/openclipart/svg"
OPENCLIPART = Package(
    "debian",
    "openclipart-svg",
    "1:0.18+dfsg-19",
    DEFAULT_OPENCLIPART_DIR,
    env=OPENCLIPART_DIR_ENV,
)
#: SPDX id of the "Copyright-Only Dedication or Public Domain Certification"
#: that the package's copyright file quotes.
OPENCLIPART_LICENSE = "CC-PDDC"
OPENCLIPART_ATTRIBUTION = (
    "Open Clip Art Library 0.18 (openclipart.org), public domain, "
    "via Debian openclipart-svg"
)


# === OpenClipart rules ===

#: A title carried by more files than this is a collection name, not a
#: caption ("gramastar" x1,375); legitimate repeats stop at 13 ("bullet hole").
MAX_TITLE_REPEATS = 12
#: Whether `openclipart` drops titles that look non-English by default.
ENGLISH_ONLY = True
#: Titles (by `caption_key`) that name a collection, not the picture: the
#: bulk titles of `more-data.md`, dropped whatever their count.
COLLECTION_TITLES = frozenset(
    {"gramastar", "lemon svg theme", "card", "etiquette icons"}
)
#: Collection titles followed by a date or the name of one of the set's files
#: ("Clipart by Nicu Buculei - pear" on an apple, a banana and 8 more).
COLLECTION_TITLE_PREFIXES = (
    "part of the flat icon collection",
    "clipart by nicu buculei",
)
#: Keywords that describe the collection's filing, not the picture.
JUNK_KEYWORDS = frozenset(
    {
        "hash",
        "magick",
        "unsorted",
        "special",
        "clipart",
        "clip art",
        "openclipart",
        "image",
        "svg",
        "media",
        "mapsym",
        "networksym",
        "weathersym",
        "appicon",
        "mimeicon",
        "mimetypes",
        "mime types",
        "musicstuff",
        "signs and symbols",
        "lemon theme icon",
        "united nations member",
        "subnational",
        "miscellany",
        "organizations",
        "activities",
        "webpage",
    }
)
_PLACEHOLDER_TITLES = frozenset(
    {
        "untitled",
        "image",
        "drawing",
        "picture",
        "svg",
        "new document",
        "layer 1",
        "title",
        "no title",
        "none",
        "unnamed",
        "clipart",
        "clip art",
    }
)

_HEAD_BYTES = 16384
_MAX_BYTES = 8 << 20
_WORK = re.compile(
    r"<(?P<p>(?:[\w.-]+:)?)Work\b[^>]*>(?P<body>.*?)</(?P=p)Work\s*>", re.S
)
_WORK_END = re.compile(rb"</(?:[\w.-]+:)?Work\s*>")
_AGENTS = re.compile(
    r"<(?P<p>(?:[\w.-]+:)?)(?P<t>creator|publisher|rights|contributor)\b[^>]*?"
    r"(?:/>|>.*?</(?P=p)(?P=t)\s*>)",
    re.S,
)
_CDATA = re.compile(r"<!\[CDATA\[(.*?)\]\]>", re.S)
_COMMENT = re.compile(r"<!--.*?-->", re.S)
_TAG = re.compile(r"<[^>]*>")
_ENTITY = re.compile(
    r"&(?:#([0-9]{1,7})|#[xX]([0-9a-fA-F]{1,6})|(amp|lt|gt|quot|apos));"
)
_XML_ENTITIES = {"amp": "&", "lt": "<", "gt": ">", "quot": '"', "apos": "'"}
_NAMED = re.compile(r"&([A-Za-z][A-Za-z0-9]{1,31});")
_ENCODING = re.compile(rb"""<\?xml[^>]*encoding=["']([A-Za-z0-9._-]+)["']""")
_LICENSE = re.compile(r"<(?:[\w.-]+:)?license\b[^>]*?resource=[\"']([^\"']*)[\"']")


def _unescape(text: str) -> str:
    """XML's predefined entities and character references, nothing else.

    A second level of escaping (`&amp;#39;`, `&amp;eacute;` in the source) is
    decoded too, HTML's named entities included; any other `&name;` (one a
    DTD would declare) stays as written.
    """

    def xml(match):
        if match.group(3):
            return _XML_ENTITIES[match.group(3)]
        code = int(match.group(1)) if match.group(1) else int(match.group(2), 16)
        if code in (9, 10, 13) or 0x20 <= code <= 0x10FFFF:
            return chr(code)
        return ""

    def named(match):
        return html.entities.html5.get(match.group(1) + ";", match.group(0))

    return _NAMED.sub(named, _ENTITY.sub(xml, _ENTITY.sub(xml, text)))


def xml_text(fragment: str) -> str:
    """The text of an XML fragment: tags and comments dropped, CDATA kept
    verbatim, entities decoded (`_unescape`), whitespace collapsed.

    Example: `xml_text("<a>Fish &amp; <![CDATA[<chips>]]></a>")` is
    `"Fish & <chips>"`.
    """
    parts, position = [], 0
    for match in _CDATA.finditer(fragment):
        outside = _COMMENT.sub("", fragment[position : match.start()])
        parts += [_unescape(_TAG.sub(" ", outside)), match.group(1)]
        position = match.end()
    outside = _COMMENT.sub("", fragment[position:])
    parts.append(_unescape(_TAG.sub(" ", outside)))
    return " ".join("".join(parts).split())


def _element(body: str, name: str) -> str | None:
    """The inner markup of the first `<dc:name>` element of `body`, or None."""
    match = re.search(
        rf"<(?P<p>(?:[\w.-]+:)?){name}\b[^>]*?(?:/>|>(?P<inner>.*?)</(?P=p){name}\s*>)",
        body,
        re.S,
    )
    if match is None:
        return None
    return match.group("inner") or ""


_LI = re.compile(
    r"<(?P<p>(?:[\w.-]+:)?)li\b(?P<attrs>[^>]*?)(?:/>|>(?P<inner>.*?)</(?P=p)li\s*>)",
    re.S,
)


def _list_items(inner: str) -> list[tuple[str, str]]:
    """`(xml:lang, inner markup)` of each `rdf:li` of an RDF container."""
    out = []
    for match in _LI.finditer(inner):
        lang = re.search(r"lang=[\"']([^\"']*)[\"']", match.group("attrs"))
        out.append((lang.group(1).lower() if lang else "", match.group("inner") or ""))
    return out


def _english_first(entries: list[tuple[str, str]]) -> str:
    """The English (else default, else first) entry of an `rdf:Alt`."""
    for wanted in ("en", "x-default", ""):
        for lang, inner in entries:
            if lang.split("-")[0] == wanted or lang == wanted:
                return inner
    return entries[0][1]


def parse_metadata(text: str) -> dict | None:
    """The title, keywords, agents and licence of an SVG's RDF `Work`.

    Reads the `cc:Work` of the SVG's `<metadata>` with regular expressions:
    its own `dc:title` (not the titles of the `dc:creator`, `dc:publisher`,
    `dc:rights` or `dc:contributor` agents), the `rdf:li` keywords of
    `dc:subject` (split on commas and semicolons), the agents' names and the
    `cc:license` resource. No entity other than XML's five predefined ones
    and character references is expanded.

    Args:
        text: str. The start of an SVG document (at least its metadata).

    Returns:
        A dict with `title` (str, maybe empty), `keywords` (list of str, as
        written), `agents` (names of the agents) and `license` (the licence
        URL, maybe empty), or None when there is no `Work`.

    Example:

    ```python
    parse_metadata(
        '<cc:Work><dc:title>Red apple</dc:title><dc:subject><rdf:Bag>'
        '<rdf:li>fruit</rdf:li></rdf:Bag></dc:subject></cc:Work>'
    )["title"]  # "Red apple"
    ```
    """
    match = _WORK.search(text)
    if match is None:
        return None
    work = match.group("body")
    agents = [xml_text(a.group(0)) for a in _AGENTS.finditer(work)]
    own = _AGENTS.sub(" ", work)
    title = ""
    inner = _element(own, "title")
    if inner is not None:
        entries = _list_items(inner)
        title = xml_text(_english_first(entries) if entries else inner)
    keywords = []
    inner = _element(own, "subject")
    if inner is not None:
        entries = _list_items(inner)
        for value in (
            [xml_text(i) for _, i in entries] if entries else [xml_text(inner)]
        ):
            keywords += [k.strip() for k in re.split(r"[,;]", value) if k.strip()]
    license_match = _LICENSE.search(own)
    return {
        "title": title,
        "keywords": keywords,
        "agents": [a for a in agents if a],
        "license": license_match.group(1).strip() if license_match else "",
    }


def read_svg_metadata(path: str | os.PathLike) -> dict | None:
    """`parse_metadata` of an SVG file, reading only what it needs.

    The first 16 KB are read; the rest (up to 8 MB) only when the metadata's
    `Work` has not ended by then. The XML declaration's encoding is honoured
    (UTF-8 otherwise); undecodable bytes are replaced.
    """
    with open(path, "rb") as f:
        data = f.read(_HEAD_BYTES)
        if len(data) == _HEAD_BYTES and not _WORK_END.search(data):
            data += f.read(_MAX_BYTES)
    encoding = "utf-8"
    declared = _ENCODING.match(data.lstrip(b"\xef\xbb\xbf \t\r\n"))
    if declared:
        try:
            encoding = codecs.lookup(declared.group(1).decode("ascii")).name
        except LookupError:
            pass
    return parse_metadata(data.decode(encoding, errors="replace"))


def _key(text: str) -> str:
    """The grouping key of a caption (as `corpus.caption_key`)."""
    text = re.sub(r"[^0-9a-z]+", " ", text.casefold()).strip()
    return re.sub(r"^(a|an|the) ", "", text)


_EXTENSION = re.compile(
    r"\.(svgz?|png|jpe?g|gif|bmp|tiff?|ai|eps|wmf|emf|xcf|pdf|odg|sk1?|py)$", re.I
)


def clean_title(title: str) -> str:
    """A caption from an OpenClipart title.

    Whitespace is collapsed and a file extension dropped. A title written as
    one token (`"Switch_Cisco_6500"`, `"redRoundButton"`, `"Aircraft1"`,
    `"05_fullmoon_openclipart"`) is split at underscores, hyphens, camel case
    and a trailing number, which is dropped with a leading zero-padded index
    and the word "openclipart". `"#1"` numbering is dropped, "bw" becomes
    "black and white", and words are lowercased except acronyms ("LCD").

    Example: `clean_title("BlueMan#101")` is `"blue man"`.
    """
    text = " ".join(title.split()).strip(" \"'`")
    if re.search("[\u00c2\u00c3][\u0080-\u00bf]", text):  # UTF-8 read as Latin-1
        try:
            text = text.encode("latin-1").decode("utf-8")
        except UnicodeError:
            pass
    text = _EXTENSION.sub("", text)
    text = re.sub(r"\s*#\s*\d+$", "", text)
    slug = " " not in text
    text = text.replace("_", " ")
    if slug:
        text = text.replace("-", " ")
        text = re.sub(r"(?<=[a-z])(?=[A-Z])", " ", text)
        text = re.sub(r"(?<=[A-Za-z]{3})(?=[0-9]+$)", " ", text)
    words = text.split()
    if slug and len(words) > 1:
        if re.fullmatch(r"[0-9]{1,3}", words[-1]):  # not "6500", a model
            words.pop()
        if re.fullmatch(r"0[0-9]+", words[0]):
            words.pop(0)
    words = [w for w in words if w.casefold() != "openclipart"]
    words = ["black and white" if w.casefold() == "bw" else w for w in words]
    if not any(c.islower() for c in "".join(words)):
        return " ".join(words).lower()
    return " ".join(w if _is_acronym(w) else w.lower() for w in words)


def openclipart_caption(title: str, agents=(), path: str = "") -> str | None:
    """The caption of an OpenClipart file, or None for a collection title.

    `clean_title`, then: None when the title is in `COLLECTION_TITLES` or
    starts with one of `COLLECTION_TITLE_PREFIXES`; a "Clipart by <name> - "
    prefix and the names of the work's agents (creator, rights holder) are
    removed; a bilingual title keeps its English side (`_english_part`); a
    file in a `flags` folder whose caption does not say "flag" is captioned
    "flag: <caption>", as the emoji sets caption flags.

    Args:
        title: str. The `dc:title`.
        agents: names of the work's agents (`parse_metadata`'s `agents`).
        path: str. The file's path below the package root.

    Example:

    ```python
    openclipart_caption("Clipart by Steve Hall - United States - Alabama",
                        path="signs_and_symbols/flags/usa_alabama.svg")
    # "flag: united states - alabama"
    ```
    """
    caption = clean_title(title)
    key = _key(caption)
    if key in COLLECTION_TITLES or key.startswith(COLLECTION_TITLE_PREFIXES):
        return None
    caption = re.sub(r"^clip ?art by [^-]+ - ", "", caption, flags=re.I)
    for agent in agents:
        words = _key(agent).split()
        if len(" ".join(words)) < 4:
            continue
        pattern = r"\b(?:by\s+)?" + r"\W+".join(map(re.escape, words)) + r"\b"
        caption = re.sub(pattern, " ", caption, flags=re.I)
    caption = " ".join(caption.split()).strip(" -,;:")
    caption = _english_part(caption)
    folders = path.replace(os.sep, "/").split("/")[:-1]
    if "flags" in folders and "flag" not in _key(caption).split() and caption:
        caption = f"flag: {caption}"
    return caption


def _is_acronym(word: str) -> bool:
    letters = [c for c in word if c.isalpha()]
    return len(letters) >= 2 and not any(c.islower() for c in letters)


def _is_untitled(caption: str) -> bool:
    key = _key(caption)
    return (
        not key or key in _PLACEHOLDER_TITLES or not re.search(r"[^\W\d_]{2,}", caption)
    )


_JUNK_KEYWORD = re.compile(r"(?:hash)?\(?0x[0-9a-f]+\)?|hash\(.*\)")


def clean_keywords(keywords: list[str], caption: str, agents=()) -> list[str]:
    """Keywords as tags: lowercased, underscores as spaces, deduplicated.

    Dropped: junk (`hash(0x8a07724)`, `0x881e2f8`, words without two letters
    in a row), `JUNK_KEYWORDS`, the names of the work's agents (authors
    tagging their own name), and the caption itself.

    Example:
        `clean_keywords(["hash(0x1)", "Fruit", "fruit", "red_apple"], "apple")`
        is `["fruit", "red apple"]`.
    """
    banned = {_key(caption)} | {_key(a) for a in agents}
    out, seen = [], set()
    for keyword in keywords:
        text = " ".join(keyword.replace("_", " ").split()).lower()
        if (
            not text
            or text in JUNK_KEYWORDS
            or _JUNK_KEYWORD.fullmatch(text)
            or not re.search(r"[^\W\d_]{2,}", text)
        ):
            continue
        key = _key(text)
        if not key or key in banned or key in seen:
            continue
        seen.add(key)
        out.append(text)
    return out


#: Words of the package's Italian, French, Spanish, Portuguese, Polish and
#: German titles that English does not use (drawn from its 2,600 titles).
NON_ENGLISH_WORDS = frozenset(
    """
    di della delle dello dei degli del nella nel nelle sulla sul sulle col con
    per da il gli una uno noi due tre quattro insieme come si bene
    le les du des au aux avec pour sur une et contre tres voies
    los las rios und mit keine bitte rauchen tueten grune
    abitazione acciaio aglio albero aladino analisi anelli antilope appunti
    aquila acquila arancione architetto arrotolata asso attenzione bambina
    barattolo bianchi bianco bibliografia bicicletta binocolo birra borsa
    bottiglia brindisi bussola cacciavite caffe calamita calcolatrice calici
    camicia campagna campeggio canguro cani capitello carrabile carriera carta
    cartella casa cassa casco cavallo cavalletta cestino cesto chiave chimico
    cigni cigno cinepresa civetta clessidra coccinella coccinellona colori
    comune coniglio contorno costruzione cretina cronometro cubo cucina
    decorazione demolizione dentata dente diagramma digitale dinosauri
    dinosauro dispongono dottore egizio elefante emergenza epoca esperimento
    estendi estiva fabbrica farfalla farfalle fata fatina ferro figo finestra
    finestre fiore fiori foglio forbici forchettoni formichina formicona
    fotografica francesco frontale frullatore fuoco gabbiano gallina gallo
    gatti gattina gatto gelato geometrico ghiaccio giallo giapponese giardino
    grigia grigio grigliata gufo incazzato incinta insetto istogramma italia
    italiana lampada lattine legno lente leone lettera libellula libro liquido
    livella lucchetto lucertola lucertolona lucertolone lumaca macchina
    mantide mattone mazzo medicina meno microfono microscopio mie modanatura
    modanature mondo montagna moschito mostriciattolo motivo negozio nero neri
    neve nonno normale notte nucleare numero ombrelloni ontologia orme orologio
    orso ottone padella paesaggio palloncini palude pallone pannocchia parete
    passo pattinatrice pattinatrici pattino pecora pelo pennello pentola
    peperoncino pera pescetto pezzata piccolo pieno pillole pinguino
    pinzatrice piramide pollo poltrona pomodori posate preferite pregiato
    profilati profilato profilo proiettore provetta provette prugna pulsante
    puntine ragnetto ragno rana ravanello regalo religiosa ricette ridimensiona
    rigido rilievo rollandin frollandin rossa rosso rotondo ruota sacco
    salvagente sangue sanitaria sapone schermo scolapasta scodella secchio
    seduto sedia sega semplice signore signorina simbolo singolo siringa sogni
    sovrapposte spalle spugna stagioni stambecco stampante stecchito stemma
    stilizzata stiro stormo subacqueo tacchino tante tasto tatuaggi tatuaggio
    tavolo tavolozza tazza teiera telecamera telecomando telefono televisore
    tenda teschio tigre tigri topo toro torta tramonto trattore turco uccelli
    uccello ufficio umano unita uomo utensile utensili utente utenti vacca
    valdostana valdostano valigie valle verde viti vuoto zanzara zucca
    abeille arbre biologique bobine calebasse carreau cartes champignon
    chaussee chutes civiere coccinelle coeur comburant corrosif couronne
    croche douche eau echelle entree environnement eteindre extincteur
    extremement facilement flamme fumer galette gateau gauffre generale
    glissante humain incendie interdite interdiction ionisantes libellule
    lourde lutte mains mante manutention moulure moulures nocif nuage
    obligation obligatoire ouie ours pansement papillon pasteque peninsule
    pieds pietons pique porcinet punaisa rayonnement religieuse respiratoires
    rincage risque rondelle sapin sauvetage secours securite sortie suivre
    tete toucher trebuchement trefle vehicules yeux
    alerta aviso disquete engrenagem espana estrella formulario municipios
    pastas preenchimento pudim
    ambulans herbaty ksiega kubek mapa recznik stara stawisk zielony
    glace italienne flamand olivier amibe collant olifant blokken pesca tabella
    portafoglio francobollo al
    """.split()
)
_ACCENTED = re.compile("[àâçéèêëîïìòôùûœ]")


def looks_non_english(caption: str) -> bool:
    """Whether a caption looks Italian, French, Spanish, Portuguese, Polish or
    German: it holds a word of `NON_ENGLISH_WORDS` or a French or Italian
    accented letter (names such as "Aragón" or "Württemberg" pass).

    Measured on the Debian package: catches "Coniglio", "cigno di notte nella
    palude", "danger général", "direction à suivre"; no English title is
    caught (the list was checked against every kept title).

    Example: `looks_non_english("gatto nero")` is True,
    `looks_non_english("black cat")` is False.
    """
    words = re.findall(r"[^\W\d_]+", caption.casefold())
    return bool(_ACCENTED.search(caption.casefold())) or any(
        w in NON_ENGLISH_WORDS for w in words
    )


def _english_part(caption: str) -> str:
    """The English side of a bilingual caption ("farfalla - butterfly" ->
    "butterfly"); the caption itself otherwise."""
    # "frying pan (padella in italian)": the aside goes.
    caption = re.sub(
        r"\s*\(([^()]*)\)",
        lambda m: "" if looks_non_english(m.group(1)) else m.group(0),
        caption,
    ).strip()
    parts = [p.strip() for p in re.split(r"\s+[-,/|]\s+|\s*,\s*", caption)]
    english = [p for p in parts if p and not looks_non_english(p)]
    if english and len(english) < len(parts) and not _is_untitled(english[0]):
        return " - ".join(english)
    return caption


_METADATA_BLOCK = re.compile(rb"<metadata\b.*?</metadata\s*>", re.S)


def _artwork_digest(path: Path) -> str:
    """SHA-256 of a file's bytes outside its first `<metadata>` block."""
    data = path.read_bytes()
    return hashlib.sha256(_METADATA_BLOCK.sub(b"", data, count=1)).hexdigest()


def openclipart_listing(
    data_dir: str | os.PathLike | None = None,
    *,
    english_only: bool = ENGLISH_ONLY,
    max_title_repeats: int = MAX_TITLE_REPEATS,
) -> tuple[list[dict], dict[str, list[str]], dict]:
    """OpenClipart's items, skipped ids and counts (the module docstring's
    rules).

    Args:
        data_dir: path or None. Unused (the package is a Debian one) but kept
            for the common signature.
        english_only: bool. Skip titles that `looks_non_english`.
        max_title_repeats: int. Skip titles carried by more files than this.

    Returns:
        `(items, skipped, meta)`: items as `CorpusSource.items` returns them
        (ids `"openclipart:<relative path without .svg>"`, `svg` the file's
        absolute path, `category` its top folder); `skipped` maps each reason
        to sorted ids; `meta` counts files and lists the bulk titles.

    Example:

    ```python
    items, skipped, meta = openclipart_listing()
    ```
    """
    if not isinstance(max_title_repeats, int) or max_title_repeats < 1:
        raise ValueError(
            "`max_title_repeats` must be a positive int. "
            f"Received: max_title_repeats={max_title_repeats!r}"
        )
    root = OPENCLIPART.path(Path(data_dir or "."))
    if not root.is_dir():
        raise FileNotFoundError(
            f"OpenClipart is not installed: no directory {root}. Install it with "
            f"`{OPENCLIPART.install_hint()}` or set ${OPENCLIPART_DIR_ENV}."
        )
    skipped: dict[str, list[str]] = {
        reason: []
        for reason in (
            "symlink",
            "not_public_domain",
            "no_metadata",
            "collection_title",
            "untitled",
            "bulk_title",
            "non_english",
            "duplicate_artwork",
        )
    }
    files = []  # (relative path without .svg, absolute path, metadata)
    for directory, subdirs, names in os.walk(root):
        subdirs.sort()
        for name in sorted(names):
            if not name.lower().endswith(".svg"):
                continue
            full = os.path.join(directory, name)
            rel = os.path.relpath(full, root).replace(os.sep, "/")[: -len(".svg")]
            if os.path.islink(full):
                skipped["symlink"].append(f"openclipart:{rel}")
                continue
            try:
                metadata = read_svg_metadata(full)
            except OSError:
                metadata = None
            files.append((rel, full, metadata))

    captions = {}
    for rel, _, metadata in files:
        if metadata is not None:
            captions[rel] = openclipart_caption(
                metadata["title"], metadata["agents"], rel
            )
    counts = collections.Counter(
        _key(c) for c in captions.values() if c and not _is_untitled(c)
    )
    candidates = []
    for rel, full, metadata in files:
        item_id = f"openclipart:{rel}"
        if metadata is None:
            skipped["no_metadata"].append(item_id)
            continue
        license_url = metadata["license"].lower()
        if license_url and "publicdomain" not in license_url.replace("-", ""):
            skipped["not_public_domain"].append(item_id)
            continue
        caption = captions[rel]
        key = _key(caption or "")
        if caption is None:
            reason = "collection_title"
        elif _is_untitled(caption):
            reason = "untitled"
        elif counts[key] > max_title_repeats:
            reason = "bulk_title"
        elif (
            english_only
            and not caption.startswith("flag: ")  # place names ("sierra leone")
            and looks_non_english(caption)
        ):
            reason = "non_english"
        else:
            reason = None
        if reason:
            skipped[reason].append(item_id)
            continue
        candidates.append(
            {
                "id": item_id,
                "caption": caption,
                "tags": clean_keywords(
                    metadata["keywords"], caption, metadata["agents"]
                ),
                "codepoint": None,
                "category": rel.split("/", 1)[0] if "/" in rel else "",
                "style": "openclipart",
                "svg": full,
            }
        )

    # The same drawing filed twice carries the same title: compare only those.
    by_key = collections.defaultdict(list)
    for item in sorted(candidates, key=lambda i: i["id"]):
        by_key[_key(item["caption"])].append(item)
    items = []
    for group in by_key.values():
        first_of: dict[str, dict] = {}
        for item in group:
            digest = _artwork_digest(Path(item["svg"])) if len(group) > 1 else ""
            kept = first_of.setdefault(digest, item)
            if kept is item:
                items.append(item)
                continue
            skipped["duplicate_artwork"].append(item["id"])
            for tag in item["tags"]:
                if tag not in kept["tags"]:
                    kept["tags"].append(tag)
    items.sort(key=lambda i: i["id"])
    for ids in skipped.values():
        ids.sort()
    meta = {
        "package": f"{OPENCLIPART.name} {OPENCLIPART.version}",
        "installed_version": paths.debian_package_version(OPENCLIPART.name),
        "root": str(root),
        "files": len(files) + len(skipped["symlink"]),
        "regular_files": len(files),
        "items": len(items),
        "distinct_captions": len({_key(i["caption"]) for i in items}),
        "english_only": english_only,
        "max_title_repeats": max_title_repeats,
        "bulk_titles": {k: n for k, n in counts.most_common() if n > max_title_repeats},
        "categories": dict(collections.Counter(i["category"] for i in items)),
    }
    return items, skipped, meta
