#!/usr/bin/env bash
# Regenerates the Kafka codec from the schemas into a temporary directory and compares it with
# the committed output. Usage: kafka_codegen_check.sh SOURCE_DIR. Exits 77 (skipped) when the
# schemas (SOURCE_DIR/../shared/kafka-protocol/schemas) or clang-format are not on this machine.
set -euo pipefail
src=$1
schemas="$src/../shared/kafka-protocol/schemas"
if [[ ! -d "$schemas" ]]; then
  echo "skipped: schemas not present ($schemas)"
  exit 77
fi
if ! command -v clang-format >/dev/null; then
  echo "skipped: clang-format not present (the committed output is formatted)"
  exit 77
fi
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
python3 "$src/net/kafka/codegen/generate.py" "$schemas" --out "$out"
status=0
for f in net/include/keel/net/kafka/messages.h net/src/kafka/messages.cc tests/net/kafka_samples.h; do
  if ! diff -u "$src/$f" "$out/$f" >"$out/diff" 2>&1; then
    echo "$f differs from the generator's output; rerun net/kafka/codegen/generate.py:"
    head -50 "$out/diff"
    status=1
  fi
done
[[ $status -eq 0 ]] && echo "generated Kafka codec is up to date"
exit $status
