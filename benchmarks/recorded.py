"""What a benchmark script prints, also written to a markdown file that the docs include, under one line that says
when, on which machine and by which command it was measured."""

from __future__ import annotations

import contextlib
import datetime
import io
import shlex
import sys
from collections.abc import Iterator
from pathlib import Path

import torch

from swinkit.core.atomic import write_atomic
from swinkit.core.machine import describe


class _Tee(io.TextIOBase):
    def __init__(self, *streams) -> None:
        self.streams = streams

    def write(self, text: str) -> int:
        for stream in self.streams:
            stream.write(text)
        return len(text)

    def flush(self) -> None:
        for stream in self.streams:
            stream.flush()


@contextlib.contextmanager
def recorded(output: str | Path) -> Iterator[None]:
    """Prints as usual inside the block; at its end writes the header and everything printed to ``output``. Nothing
    is written when the block raises, so a failed measurement never replaces a finished one."""
    command = shlex.join(["python", *sys.argv])
    header = (f"Measured {datetime.date.today()} on {describe()}, {torch.get_num_threads()} threads, torch "
              f"{torch.__version__}, by `{command}`.\n\n")  # fmt: skip
    captured = io.StringIO()
    with contextlib.redirect_stdout(_Tee(sys.stdout, captured)):
        yield
    write_atomic(Path(output), lambda tmp: Path(tmp).write_text(header + captured.getvalue()))
