"""A progress bar on stderr (stdout stays for results), redrawn in place on a terminal, one line per step
otherwise so that logs stay readable."""

from __future__ import annotations

import sys
import time


class Progress:
    def __init__(self, total: int, width: int = 30, stream=None):
        self.total, self.width, self.done = max(total, 1), width, 0
        self.stream = stream or sys.stderr
        self.start = time.monotonic()
        self.tty = self.stream.isatty()

    def step(self, label: str, count: int = 1) -> None:
        """Mark `count` more steps done; `label` names what just finished."""
        self.done = min(self.done + count, self.total)
        filled = self.width * self.done // self.total
        bar = "#" * filled + "-" * (self.width - filled)
        line = f"[{bar}] {self.done}/{self.total} {time.monotonic() - self.start:5.0f}s {label}"
        if self.tty:
            self.stream.write("\r" + line[:150].ljust(150) + ("\n" if self.done == self.total else ""))
        else:
            self.stream.write(line + "\n")
        self.stream.flush()
