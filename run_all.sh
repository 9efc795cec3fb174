#!/usr/bin/env bash
# Every protocol × every checkpoint of checkpoints.yaml that is on this machine, then the tables and plots.
#
#   ./run_all.sh [--device cuda] [any other `bench run` flag]     (results go to $RESULTS, default results/)
#
# - Protocols come from `bench list protocols`; checkpoints from `python3 -m bench.sweep` (which says why each
#   skipped one is skipped: not downloaded, no arch, ...). Nothing is downloaded.
# - With no datasets configured ($BENCH_DATA unset, no --data-root) everything runs on the miniatures with
#   --quick: a smoke run of a few minutes on a CPU whose records are never comparable with the papers.
# - Protocols run with a random resnet18 (the "random" row) when no checkpoint is present locally, and always
#   on the miniatures.
# - One failing run does not stop the sweep: it is logged, the sweep goes on, and the summary lists it
#   (exit status 1 when anything failed).
set -uo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
export BENCH_PROGRESS=${BENCH_PROGRESS:-0}   # no progress bars in the log tails
RESULTS=${RESULTS:-results}
EXTRA=("$@")

mini=0
if [ -z "${BENCH_DATA:-}" ] && [[ " $* " != *" --data-root "* ]]; then
  mini=1
  EXTRA+=(--quick)
  echo "run_all: no \$BENCH_DATA and no --data-root: running on the miniature datasets with --quick"
  echo "run_all: (smoke numbers; every record and table marks them not comparable with the papers)"
fi

protocols=$($PY -m bench list protocols | awk '{print $1}') || { echo "run_all: bench list protocols failed"; exit 2; }
plan=$($PY -m bench.sweep) || { echo "run_all: reading checkpoints.yaml failed"; exit 2; }

backbones=()   # "label|bench backbone args"
while IFS=$'\t' read -r action name what arch; do
  [ -z "$action" ] && continue
  if [ "$action" = run ]; then
    backbones+=("$name|--ckpt $what --arch $arch")
  else
    echo "run_all: skip checkpoint $name: $what"
  fi
done <<< "$plan"
if [ ${#backbones[@]} -eq 0 ] || [ $mini -eq 1 ]; then
  [ ${#backbones[@]} -eq 0 ] && echo "run_all: no checkpoint of checkpoints.yaml is present locally"
  backbones+=("random resnet18|--model resnet18")
fi

ok=(); failed=()
log=$(mktemp)
trap 'rm -f "$log"' EXIT
for protocol in $protocols; do
  for entry in "${backbones[@]}"; do
    label=${entry%%|*}; args=${entry#*|}
    echo "run_all: $protocol × $label"
    # shellcheck disable=SC2086  # $args is a list of flags built above
    if $PY -m bench run --protocol "$protocol" $args --out "$RESULTS" "${EXTRA[@]}" >"$log" 2>&1; then
      ok+=("$protocol × $label"); sed 's/^/    /' "$log" | grep -v '^\s*$' | tail -n 20
    else
      failed+=("$protocol × $label"); echo "run_all: FAILED $protocol × $label:"; tail -n 15 "$log" | sed 's/^/    /'
    fi
  done
done

$PY -m bench table --results "$RESULTS" || failed+=("bench table")

echo
echo "run_all: ${#ok[@]} runs succeeded, ${#failed[@]} failed"
for f in "${failed[@]}"; do echo "  failed: $f"; done
[ $mini -eq 1 ] && echo "run_all: miniature data: tables in $RESULTS/ show these runs as not comparable"
echo "run_all: tables and plots in $RESULTS/ (start at $RESULTS/index.md)"
[ ${#failed[@]} -eq 0 ]
