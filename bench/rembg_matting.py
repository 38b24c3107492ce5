"""rembg's alpha matting (``remove(..., alpha_matting=True)``, its defaults) photo by photo: the worker bench/quality.py --refine runs.

    python bench/rembg_matting.py HOME OUT_DIR    # then one JSON line per photo on stdin: {"id": ..., "image": PATH}

``HOME`` is a rembg home whose ``isnet-general-use`` session holds this project's weights (bench/rembg_model.py,
``general_use_home``), so nothing is downloaded. For each photo: one call with alpha matting and one without (the
same session; the difference is what alpha matting costs), the alpha channel of the first written to
``OUT_DIR/<id>.png``, and one JSON line on stdout: both calls' seconds and the process's peak RSS so far. Photos are
read one line at a time, so the caller can interleave them with its own work. A photo whose call fails (rembg's
solver out of memory under the caller's cap, say) gets ``"error"`` instead. Run in its own process, so a memory cap
or a crash stays there.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import sys
import time
from pathlib import Path

from procs import peak_rss_mb


def _both(session, data: bytes, alpha_path: Path) -> dict[str, float]:
    from PIL import Image
    from rembg import remove

    started = time.perf_counter()
    remove(data, session=session)
    plain_s = time.perf_counter() - started
    started = time.perf_counter()
    matted = remove(data, session=session, alpha_matting=True)
    matting_s = time.perf_counter() - started
    Image.open(io.BytesIO(matted)).getchannel("A").save(alpha_path)
    return {"plain_s": plain_s, "matting_s": matting_s}


def main() -> None:
    home, out_dir = Path(sys.argv[1]), Path(sys.argv[2])
    os.environ["U2NET_HOME"] = str(home)
    from rembg import new_session

    session = new_session("isnet-general-use")
    out_dir.mkdir(parents=True, exist_ok=True)
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        photo = json.loads(line)
        data = Path(photo["image"]).read_bytes()
        row = {"id": photo["id"]}
        try:
            with contextlib.redirect_stdout(sys.stderr):  # pymatting prints its solver's warnings on stdout
                row.update(_both(session, data, out_dir / f"{photo['id']}.png"))
        except (MemoryError, ValueError, RuntimeError) as error:
            row["error"] = f"{type(error).__name__}: {error}"
        row["peak_rss_mb"] = peak_rss_mb(os.getpid())
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
