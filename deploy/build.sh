#!/bin/sh
# Builds the release binaries: static (CGO_ENABLED=0), reproducible paths,
# no debug info. The Dockerfile runs this script, and so do CI and the
# end-to-end test in internal/deploytest, so the image ships exactly the
# binaries that were tested.
#
#   deploy/build.sh [OUTDIR]     # default ./bin
set -eu
out=${1:-bin}
cd "$(dirname "$0")/.."
for cmd in gateway producer; do
	CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o "$out/$cmd" "./cmd/$cmd"
done
