#!/bin/sh
# Regenerates the test-only PKI in certs/test/ with `pecd init` (see certs/README.md).
# Usage: certs/regen.sh   (from anywhere inside the repository)
set -eu

root=$(cd "$(dirname "$0")/.." && pwd)
out="$root/certs/test"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

cargo run --quiet --manifest-path "$root/Cargo.toml" --bin pecd -- \
    init --dir "$tmp" --domain pec.example.test --provider-name "pecd Test Provider"

mkdir -p "$out"
for f in ca.pem ca.key tls.pem tls.key signing.pem signing.key; do
    cp "$tmp/certs/$f" "$out/$f"
done
chmod 600 "$out"/*.key
chmod 644 "$out"/*.pem

if command -v openssl >/dev/null 2>&1; then
    openssl verify -CAfile "$out/ca.pem" "$out/signing.pem" "$out/tls.pem"
fi
echo "test PKI written to $out (test only: never use these keys in production)"
