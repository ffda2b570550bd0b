"""Moving a checkpoint folder through size-limited transfers (the GPU machine's $OUT and carry).

The device tool brings back at most 8 files of 16 MiB each from $OUT, at most two folders
deep, so a pipeline folder is packed into one uncompressed tar (fp16 weights do not compress)
split into parts below that size, and unpacked here (or on the next machine) from the parts.

    python -m mvdpp.training.carry pack runs/eps/export "$OUT" --name export
    python -m mvdpp.training.carry unpack /path/to/fetched/files .device-carry/export --name export

Standard library only.
"""

from __future__ import annotations

import argparse
import io
import shutil
import sys
import tarfile
from pathlib import Path

PART_BYTES = 15 * 2**20  # under the 16 MiB per-file limit


def pack(folder: str | Path, out_dir: str | Path, name: str = "export", part_bytes: int = PART_BYTES, max_parts: int = 8) -> list[Path]:
    folder, out_dir = Path(folder), Path(out_dir)
    if not folder.is_dir():
        raise SystemExit(f"carry pack: {folder} is not a folder")
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        tar.add(folder, arcname=name)
    data = buffer.getvalue()
    count = max(1, -(-len(data) // part_bytes))
    if count > max_parts:
        raise SystemExit(f"carry pack: {folder} is {len(data) / 2**20:.1f} MiB, more than {max_parts} parts of "
                         f"{part_bytes / 2**20:.0f} MiB; the transfer cannot bring it back")
    out_dir.mkdir(parents=True, exist_ok=True)
    parts = []
    for i in range(count):
        part = out_dir / f"{name}.tar.part{i:02d}of{count:02d}"
        part.write_bytes(data[i * part_bytes:(i + 1) * part_bytes])
        parts.append(part)
    return parts


def unpack(parts_dir: str | Path, dest: str | Path, name: str = "export") -> Path:
    parts_dir, dest = Path(parts_dir), Path(dest)
    parts = sorted(parts_dir.glob(f"{name}.tar.part*of*"))
    if not parts:
        raise SystemExit(f"carry unpack: no {name}.tar.part* files in {parts_dir}")
    expected = int(parts[0].name.rsplit("of", 1)[1])
    if len(parts) != expected:
        raise SystemExit(f"carry unpack: {len(parts)} of {expected} parts of {name} in {parts_dir}")
    data = b"".join(p.read_bytes() for p in parts)
    staging = dest.with_name(dest.name + ".unpacking")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    with tarfile.open(fileobj=io.BytesIO(data), mode="r") as tar:
        tar.extractall(staging, filter="data")
    if dest.exists():
        shutil.rmtree(dest)
    (staging / name).rename(dest)
    shutil.rmtree(staging)
    return dest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mvdpp.training.carry", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="verb", required=True)
    p = sub.add_parser("pack", help="folder -> NAME.tar.partXXofYY files in OUT_DIR")
    p.add_argument("folder")
    p.add_argument("out_dir")
    p.add_argument("--name", default="export")
    u = sub.add_parser("unpack", help="NAME.tar.part* files in PARTS_DIR -> folder DEST")
    u.add_argument("parts_dir")
    u.add_argument("dest")
    u.add_argument("--name", default="export")
    args = parser.parse_args(argv)
    if args.verb == "pack":
        for part in pack(args.folder, args.out_dir, args.name):
            print(part)
    else:
        print(unpack(args.parts_dir, args.dest, args.name))
    return 0


if __name__ == "__main__":
    sys.exit(main())
