"""The run's metrics file: one JSON object a line in RUN_DIR/metrics.jsonl."""

from __future__ import annotations

import json
from pathlib import Path


class MetricsLog:
    """Appends records to a JSON-lines file; a no-op on processes that do not write (rank > 0)."""

    def __init__(self, path: Path, enabled: bool = True):
        self.path = path
        self.enabled = enabled

    def write(self, **record) -> None:
        if self.enabled:
            with open(self.path, "a") as f:
                f.write(json.dumps(record) + "\n")
