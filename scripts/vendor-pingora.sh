#!/usr/bin/env bash
# The vendored pingora crates, re-derived: vendor/pingora-core and vendor/pingora-http are the
# crates.io sources of VERSION without benches/ and examples/, with vendor/patches/CRATE/*.patch
# applied in order (each one documented in vendor/CRATE/PATCHES.md, which is kept as it is).
#
#   scripts/vendor-pingora.sh [VERSION]           rewrite vendor/CRATE from the sources + patches
#   scripts/vendor-pingora.sh --check [VERSION]   exit 1, naming the files, if vendor/ differs
#
# VERSION defaults to the one Cargo.toml pins. The .crate files come from cargo's download cache
# when there, else from static.crates.io. To move to a new pingora: run with the new VERSION, fix
# the patches that no longer apply, run again, and update the `=` pins in Cargo.toml.
set -euo pipefail
cd "$(dirname "$0")/.."
check=0
if [ "${1:-}" = --check ]; then
  check=1
  shift
fi
version="${1:-$(sed -n 's/^pingora-core = { version = "=\([0-9.]*\)".*/\1/p' Cargo.toml)}"
[ -n "$version" ] || { echo "vendor-pingora: no VERSION given and no pingora-core pin in Cargo.toml" >&2; exit 2; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
root=$(pwd)
status=0
for crate in pingora-core pingora-http; do
  file="$crate-$version.crate"
  cached=$(ls "${CARGO_HOME:-$HOME/.cargo}"/registry/cache/*/"$file" 2>/dev/null | head -n 1 || true)
  if [ -n "$cached" ]; then
    cp "$cached" "$work/$file"
  else
    curl -sSfL --retry 3 -o "$work/$file" "https://static.crates.io/crates/$crate/$file"
  fi
  tar xzf "$work/$file" -C "$work"
  dir="$work/$crate-$version"
  rm -rf "$dir/benches" "$dir/examples"
  for patch in "$root"/vendor/patches/"$crate"/*.patch; do
    [ -e "$patch" ] || continue
    if ! (cd "$dir" && git apply -p1 --whitespace=nowarn "$patch"); then
      echo "vendor-pingora: $(basename "$patch") does not apply to $crate $version" >&2
      exit 1
    fi
  done
  cp "vendor/$crate/PATCHES.md" "$dir/PATCHES.md"
  if [ "$check" = 1 ]; then
    if ! diff -r "$dir" "vendor/$crate" >"$work/$crate.diff"; then
      echo "vendor-pingora: vendor/$crate is not $crate $version + vendor/patches/$crate:" >&2
      head -n 40 "$work/$crate.diff" >&2
      status=1
    fi
  else
    rm -rf "vendor/$crate"
    cp -r "$dir" "vendor/$crate"
  fi
done
if [ "$check" = 1 ] && [ "$status" = 0 ]; then
  echo "vendor-pingora: vendor/ is pingora $version + vendor/patches"
fi
exit "$status"
