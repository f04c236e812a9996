"""`keras-towers embed`: image or text embeddings of a folder or a table,
written to `.npy` (with an ids file) or `.parquet`, row by row with ids."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np

from keras_towers.cli.common import _image_paths
from keras_towers.cli.common import load_model
from keras_towers.datasets import read_image
from keras_towers.utils.io import atomic_write
from keras_towers.utils.io import write_json

#: Output formats by suffix.
FORMATS = (".npy", ".parquet")
#: Table files `--images` / `--texts` read row by row.
TABLE_SUFFIXES = (".csv", ".tsv", ".jsonl")
#: Images read (and encoded) at a time: memory stays bounded on big folders.
IMAGE_CHUNK = 256


def cmd_embed(args) -> int:
    output = Path(args.output)
    _check_output(output, args.overwrite)
    if args.images is not None:
        ids, paths = _image_inputs(args.images, args.column)
        model = load_model(args.preset, args)
        chunks = []
        for start in range(0, len(paths), IMAGE_CHUNK):
            images = [read_image(p) for p in paths[start : start + IMAGE_CHUNK]]
            chunks.append(model.encode_images(images, batch_size=args.batch_size))
        embeddings = np.concatenate(chunks)
        modality = "image"
    else:
        ids, texts = _text_inputs(args.texts, args.column)
        model = load_model(args.preset, args)
        embeddings = model.encode_texts(texts, batch_size=args.batch_size)
        modality = "text"
    embeddings = np.asarray(embeddings, np.float32)
    _write(output, ids, embeddings, preset=args.preset, modality=modality)
    print(
        f"wrote {len(ids)} {modality} embeddings of dimension "
        f"{embeddings.shape[1]} to {output}"
        + (f" (ids in {_ids_path(output)})" if output.suffix == ".npy" else "")
    )
    return 0


def _check_output(output: Path, overwrite: bool) -> None:
    if output.suffix not in FORMATS:
        raise ValueError(
            f"--output {output}: expected a file ending in {' or '.join(FORMATS)}."
        )
    if output.is_dir():
        raise ValueError(f"--output {output} is a folder; expected a file name.")
    if output.exists() and not overwrite:
        raise ValueError(
            f"--output {output} exists; pass --overwrite to replace it (nothing "
            "was written)."
        )
    if output.suffix == ".parquet":
        _pyarrow()  # fail before encoding anything


def _pyarrow():
    try:
        import pyarrow
        import pyarrow.parquet
    except ImportError:
        raise ValueError(
            "Writing .parquet needs pyarrow: `pip install keras-towers[parquet]` "
            "(or write .npy)."
        ) from None
    return pyarrow


def _read_table(path: str) -> tuple[list[dict], list[str]]:
    """Rows and column names of a .csv/.tsv/.jsonl file."""
    if path.endswith(".jsonl"):
        rows = []
        with open(path, encoding="utf-8") as f:
            for number, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as e:
                    raise ValueError(
                        f"{path}, line {number}: not JSON ({e})."
                    ) from None
                if not isinstance(row, dict):
                    raise ValueError(f"{path}, line {number}: expected an object.")
                rows.append(row)
        columns = sorted({key for row in rows for key in row})
        return rows, columns
    delimiter = "\t" if path.endswith(".tsv") else ","
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f, delimiter=delimiter)
        rows = list(reader)
        return rows, list(reader.fieldnames or [])


def _column(path: str, columns: list[str], wanted: str | None, defaults) -> str:
    candidates = [wanted] if wanted else list(defaults)
    for name in candidates:
        if name in columns:
            return name
    raise ValueError(
        f"{path} has no {' or '.join(repr(c) for c in candidates)} column; its "
        f"columns are {columns}. Pick one with --column."
    )


def _ids(path: str, rows: list[dict], columns: list[str], fallback: list[str]):
    if "id" not in columns:
        return fallback
    ids = [str(row.get("id", "")) for row in rows]
    missing = [i for i, value in enumerate(ids) if value in ("", "None")]
    if missing:
        raise ValueError(f"{path}: rows {missing[:5]} have no `id`.")
    seen = set()
    repeated = sorted({i for i in ids if i in seen or seen.add(i)})
    if repeated:
        raise ValueError(f"{path}: ids {repeated[:5]} appear more than once.")
    return ids


def _image_inputs(arguments, column):
    """(ids, image paths) from files/folders/globs or one table file."""
    if len(arguments) == 1 and arguments[0].lower().endswith(TABLE_SUFFIXES):
        table = arguments[0]
        if not os.path.isfile(table):
            raise FileNotFoundError(f"--images {table}: no such file.")
        rows, columns = _read_table(table)
        name = _column(table, columns, column, ("image",))
        root = Path(table).parent
        paths = [str(root / str(row[name])) for row in rows]
        if not paths:
            raise ValueError(f"--images {table}: the table has no rows.")
        return _ids(table, rows, columns, [str(row[name]) for row in rows]), paths
    if column:
        raise ValueError("--column applies to a table (.csv/.tsv/.jsonl) only.")
    paths = _image_paths(arguments)
    return list(paths), paths


def _text_inputs(path, column):
    """(ids, texts) from a .txt file (one per line) or a table file."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"--texts {path}: no such file.")
    if path.lower().endswith(TABLE_SUFFIXES):
        rows, columns = _read_table(path)
        name = _column(path, columns, column, ("caption", "text"))
        texts = [str(row.get(name) or "") for row in rows]
        ids = _ids(path, rows, columns, [str(i) for i in range(len(rows))])
    else:
        if column:
            raise ValueError("--column applies to a table (.csv/.tsv/.jsonl) only.")
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
        # ids are 1-based line numbers; blank lines are skipped, not embedded.
        ids = [str(n) for n, line in enumerate(lines, 1) if line.strip()]
        texts = [line for line in lines if line.strip()]
    if not texts:
        raise ValueError(f"--texts {path}: no texts in the file.")
    return ids, texts


def _ids_path(output: Path) -> Path:
    return output.with_suffix(".ids.json")


def _write(output: Path, ids, embeddings, preset: str, modality: str) -> None:
    """Write whole or not at all (`atomic_write`: a temporary name, then
    renamed); the ids file of `.npy` follows the array."""
    if output.suffix == ".npy":
        atomic_write(output, lambda f: np.save(f, embeddings, allow_pickle=False))
        write_json(
            _ids_path(output),
            {"preset": preset, "modality": modality, "ids": list(ids)},
        )
        return
    pa = _pyarrow()
    dim = embeddings.shape[1]
    table = pa.table(
        {
            "id": pa.array(list(ids), pa.string()),
            "embedding": pa.FixedSizeListArray.from_arrays(
                pa.array(embeddings.reshape(-1), pa.float32()), dim
            ),
        }
    ).replace_schema_metadata({"preset": preset, "modality": modality})
    atomic_write(output, lambda tmp: pa.parquet.write_table(table, tmp), pass_path=True)
