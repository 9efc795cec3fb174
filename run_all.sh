#!/usr/bin/env bash
# Every protocol × every checkpoint present locally, then the tables. With no datasets configured
# ($BENCH_DATA / --data-root) everything runs on the miniatures, which is said in every record and table.
set -euo pipefail
cd "$(dirname "$0")"
if [ -z "${BENCH_DATA:-}" ]; then
  echo "run_all: no \$BENCH_DATA: running on the miniature datasets (smoke numbers, not comparable with papers)"
fi
bench run --protocol knn "$@"
