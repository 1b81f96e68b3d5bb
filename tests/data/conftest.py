"""Fixtures for the dataset tests: an isolated search path, IDX writers and a local HTTP server."""

from __future__ import annotations

import gzip
import http.server
import struct
import threading
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path

import numpy as np
import pytest

from hmcam.data import locate

IDX_CODES = {np.dtype(np.uint8): 0x08, np.dtype(">i4"): 0x0C, np.dtype(">f4"): 0x0D}


def _idx_bytes(array: np.ndarray) -> bytes:
    """The IDX encoding of ``array`` (uint8, big-endian int32 or float32)."""
    code = IDX_CODES[array.dtype]
    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.tobytes()


@pytest.fixture
def write_idx() -> Callable[..., Path]:
    """``write_idx(path, array, compress)`` writes an IDX file, gzipped when ``compress``."""

    def write(path: Path, array: np.ndarray, compress: bool = False) -> Path:
        data = _idx_bytes(array)
        path.write_bytes(gzip.compress(data, mtime=0) if compress else data)
        return path

    return write


@pytest.fixture
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """Point HOME, $HMCAM_DATA (unset) and the system folders at empty temporary folders."""
    home = tmp_path / "home"
    system = tmp_path / "system"
    home.mkdir()
    system.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv(locate.ENV_VAR, raising=False)
    monkeypatch.setattr(locate, "SYSTEM_DIRS", (system,))
    return {"home": home, "cache": home / ".cache" / "hmcam", "system": system}


class _Handler(http.server.SimpleHTTPRequestHandler):
    """Serves a folder; ``/truncated/<name>`` announces the full length but sends only half the body."""

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        if self.path.startswith("/truncated/"):
            body = (Path(self.directory) / self.path.removeprefix("/truncated/")).read_bytes()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body[: len(body) // 2])
            self.close_connection = True
            return
        super().do_GET()


@pytest.fixture
def http_root(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A folder and the base URL (``http://127.0.0.1:<port>/``) of a server that serves it."""
    served = tmp_path / "served"
    served.mkdir()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(_Handler, directory=str(served)))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield served, f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
