"""Reading the committed output files back, whatever their format, typed by the table's mapping.

For users' checks and the end-to-end verification: every visible file under ``output.path`` (not
in-progress files, which start with a dot, not dead letters or the shards' positions). A table with
configured columns is read with the schema it was written with, so JSON lines, Parquet and CSV give
identical rows; one whose columns follow the table is read with each file's own schema (Parquet) or
its header and inferred types (CSV, JSON lines), the metadata columns typed.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.json as pa_json
import pyarrow.parquet as pq

from flink_job.files import SUFFIX
from flink_job.mapping import META, TableMapping
from obflow.config import ObflowConfig


def output_files(config: ObflowConfig) -> Iterator[tuple[str, Path]]:
    """(table, file) for every committed output file, in name order (per table: by first commit)."""
    root = Path(config.output.path)
    suffix = SUFFIX[config.output.format]
    for table in config.source.qualified_tables():
        folder = root / table
        if folder.is_dir():
            for file in sorted(folder.rglob(f"*{suffix}"), key=lambda f: f.name):
                if not file.name.startswith("."):
                    yield table, file


def read_file(file: Path, schema: pa.Schema | None) -> pa.Table:
    """The rows of ``file``, typed by ``schema``; None: a file of a table whose columns follow it."""
    if file.suffix == ".parquet":
        return pq.read_table(file)
    types = schema or META
    if file.suffix == ".csv":
        # a null is an empty field, an empty string is "" (quoted)
        options = pa_csv.ConvertOptions(column_types=types, strings_can_be_null=True, quoted_strings_can_be_null=False)
        return pa_csv.read_csv(file, convert_options=options)
    unexpected = "infer" if schema is None else "error"
    return pa_json.read_json(file, parse_options=pa_json.ParseOptions(types, unexpected_field_behavior=unexpected))


def read_output(config: ObflowConfig) -> Iterator[tuple[str, Path, list[dict[str, Any]]]]:
    """(table, file, rows) for every committed output file."""
    tables = config.source.qualified_tables()
    schemas = {name: TableMapping(table).schema if table.columns else None for name, table in tables.items()}
    for table, file in output_files(config):
        yield table, file, read_file(file, schemas[table]).to_pylist()
