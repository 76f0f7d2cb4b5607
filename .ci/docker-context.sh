#!/usr/bin/env bash
# The container image's builder stage, checked without a Docker engine (none runs on CI's machines): copies
# what the Dockerfile's builder stage COPYs, from the build context as Docker sees it (.dockerignore
# honoured), into an empty directory, and runs the stage's cargo build there as `cargo check` (the same
# manifest, lockfile and sources; no link, to keep CI short). A manifest naming a file the image lacks (a
# bench, a build script) fails here as it would fail `docker build`.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
context=$(mktemp -d)
trap 'rm -rf "$context"' EXIT
python3 - "$context" <<'PY'
import fnmatch, os, re, shutil, sys

context = sys.argv[1]
patterns = [l.strip().rstrip("/") for l in open(".dockerignore") if l.strip() and not l.startswith("#")]

def ignored(path):
    return any(fnmatch.fnmatch(path, p) or path.startswith(p + "/") for p in patterns)

builder = open("Dockerfile").read().split("\nFROM ")[1]  # the first stage: the builder
copied = 0
for line in builder.splitlines():
    match = re.match(r"COPY\s+(?!--)(.+?)\s+(\S+)$", line.strip())
    if not match:
        continue
    for source in match.group(1).split():
        walk = os.walk(source) if os.path.isdir(source) else [(os.path.dirname(source), [], [os.path.basename(source)])]
        for root, _, files in walk:
            for name in files:
                path = os.path.normpath(os.path.join(root, name))
                if ignored(path):
                    continue
                target = os.path.join(context, path)
                os.makedirs(os.path.dirname(target), exist_ok=True)
                shutil.copy2(path, target)
                copied += 1
print(f"docker build context: {copied} files copied by the builder stage")
PY
cd "$context"
CARGO_TARGET_DIR="$repo/target" cargo check --release --locked --quiet
echo "docker build context: the builder stage's cargo build accepts it"
