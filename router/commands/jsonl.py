"""JSONL in, JSONL out: the file handling `triage classify` and `triage cascade score` share."""

from __future__ import annotations

import sys
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, Iterator

import typer


@contextmanager
def jsonl_io(input: Path, output: Path) -> Iterator[tuple[BinaryIO, BinaryIO]]:
    """(in, out) binary streams; '-' means stdin/stdout. A missing input or unwritable output is a
    one-line error (exit 2), and whatever was opened is closed (stdout flushed) however the body ends."""
    if str(input) != "-" and not input.is_file():
        typer.echo(f"error: --input {input}: no such file", err=True)
        raise typer.Exit(2)
    fin = sys.stdin.buffer if str(input) == "-" else open(input, "rb")
    try:
        fout = sys.stdout.buffer if str(output) == "-" else open(output, "wb")
    except OSError as e:
        fin.close()
        typer.echo(f"error: --output {output}: {e.strerror}", err=True)
        raise typer.Exit(2) from None
    try:
        yield fin, fout
    finally:
        if fin is not sys.stdin.buffer:
            fin.close()
        if fout is not sys.stdout.buffer:
            fout.close()
        else:
            fout.flush()
