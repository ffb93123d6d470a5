#!/usr/bin/env bash
# Vendor the browser runtime's two npm packages into src/webgpu_llm/web/vendor/ (see its README).
# Usage: scripts/vendor-web.sh [TOKENIZERS_VERSION] [JINJA_VERSION]   (needs npm; run by hand)
set -euo pipefail
tok="${1:-0.2.0}"
jinja="${2:-0.5.11}"
here="$(cd "$(dirname "$0")/.." && pwd)"
dest="$here/src/webgpu_llm/web/vendor"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cd "$work"
npm pack --silent "@huggingface/tokenizers@$tok" "@huggingface/jinja@$jinja" >/dev/null
mkdir t j
tar xzf "huggingface-tokenizers-$tok.tgz" -C t
tar xzf "huggingface-jinja-$jinja.tgz" -C j
cp t/package/dist/tokenizers.mjs "$dest/tokenizers.mjs"
cp t/package/LICENSE "$dest/tokenizers.LICENSE"
cp j/package/dist/index.js "$dest/jinja.mjs"
cp j/package/LICENSE "$dest/jinja.LICENSE"
cd "$dest" && sha256sum tokenizers.mjs jinja.mjs
echo "now update the versions and hashes in $dest/README.md"
