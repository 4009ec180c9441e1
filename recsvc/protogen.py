"""Generate (or check) the Python gRPC code from proto/.

Generated modules are committed under ``recsvc/v1/`` so that a plain install needs no
protoc; ``make lint`` runs ``--check`` so they never drift from the .proto files.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO_DIR = ROOT / "proto"
OUT_PACKAGE = ROOT / "recsvc" / "v1"


def _generate(out_root: Path) -> list[Path]:
    from grpc_tools import protoc  # dev dependency only

    protos = sorted(PROTO_DIR.glob("recsvc/v1/*.proto"))
    args = [
        "protoc",
        f"-I{PROTO_DIR}",
        f"--python_out={out_root}",
        f"--pyi_out={out_root}",
        f"--grpc_python_out={out_root}",
        *[str(p) for p in protos],
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    return sorted((out_root / "recsvc" / "v1").glob("*_pb2*.py*"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if committed code is stale")
    ns = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        generated = _generate(Path(tmp))
        stale = []
        for path in generated:
            target = OUT_PACKAGE / path.name
            new = path.read_bytes()
            if ns.check:
                if not target.exists() or target.read_bytes() != new:
                    stale.append(target.name)
            else:
                target.write_bytes(new)
        if stale:
            print(f"generated gRPC code is stale: {stale}; run `make proto`", file=sys.stderr)
            return 1
    if not ns.check:
        print(f"wrote {len(generated)} files to {OUT_PACKAGE}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
