#!/usr/bin/env bash
# Every protocol × every checkpoint of checkpoints.yaml that is on this machine, then the tables and plots.
#
#   ./run_all.sh [--device cuda] [any other `bench run` flag]
#
# Results go to $RESULTS: by default results/local/ (git-ignored; results/ itself is the committed leaderboard,
# rewritten only by `python results/regenerate.py` or RESULTS=results ./run_all.sh).
#
# - Protocols come from `bench list protocols`; checkpoints from `python3 -m bench.sweep` (which says why each
#   skipped one is skipped: not downloaded, no arch, ...). Nothing is downloaded.
# - With no datasets configured ($BENCH_DATA unset, no --data-root) everything runs on the miniatures with
#   --quick: a smoke run of a few minutes on a CPU whose records are never comparable with the papers.
# - Protocols run with a random resnet18 (the "random" row) when no checkpoint is present locally, and always
#   on the miniatures.
# - One failing run does not stop the sweep: it is logged, the sweep goes on, and the summary lists it
#   (exit status 1 when anything failed). Ctrl-C stops it at once; finished records are kept.
# - Each run prints a line before it starts and its time after it ends.
set -uo pipefail
for a in "$@"; do
  if [ "$a" = -h ] || [ "$a" = --help ]; then
    sed -n '2,/^set -uo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'
    exit 0
  fi
done
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
RESULTS=${RESULTS:-$($PY -c 'from bench._results_dir import default_results; print(default_results())')} || exit 2
EXTRA=("$@")
ok=(); failed=()
interrupted() {
  echo
  echo "run_all: interrupted; ${#ok[@]} finished runs are kept in $RESULTS/runs (bench table --results $RESULTS)"
  exit 130
}
trap interrupted INT TERM

mini=0
if [ -z "${BENCH_DATA:-}" ] && [[ " $* " != *" --data-root "* ]]; then
  mini=1
  EXTRA+=(--quick)
  echo "run_all: no \$BENCH_DATA and no --data-root: running on the miniature datasets with --quick"
  echo "run_all: (smoke numbers; every record and table marks them not comparable with the papers)"
fi

protocols=$($PY -m bench list protocols | awk '{print $1}') || { echo "run_all: bench list protocols failed"; exit 2; }
echo "run_all: planning (trains the reference miniature checkpoints on first use, with a progress bar)"
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

log=$(mktemp)
trap 'rm -f "$log"' EXIT
n_protocols=$(echo $protocols | wc -w)
total=$((n_protocols * ${#backbones[@]})); i=0
for protocol in $protocols; do
  for entry in "${backbones[@]}"; do
    label=${entry%%|*}; args=${entry#*|}; i=$((i + 1))
    echo "run_all: [$i/$total] $protocol × $label"
    start=$SECONDS
    # shellcheck disable=SC2086  # $args is a list of flags built above; no progress bars in the log tails
    BENCH_PROGRESS=${BENCH_PROGRESS:-0} $PY -m bench run --protocol "$protocol" $args --out "$RESULTS" "${EXTRA[@]}" >"$log" 2>&1
    rc=$?
    [ $rc -eq 130 ] && interrupted    # bench turns Ctrl-C into exit 130: the sweep stops with it
    if [ $rc -eq 0 ]; then
      ok+=("$protocol × $label"); sed 's/^/    /' "$log" | grep -v '^\s*$' | tail -n 20
    else
      failed+=("$protocol × $label"); echo "run_all: FAILED $protocol × $label:"; tail -n 15 "$log" | sed 's/^/    /'
    fi
    echo "run_all: [$i/$total] $((SECONDS - start)) s"
  done
done

$PY -m bench table --results "$RESULTS" || failed+=("bench table")

echo
echo "run_all: ${#ok[@]} runs succeeded, ${#failed[@]} failed"
for f in "${failed[@]}"; do echo "  failed: $f"; done
[ $mini -eq 1 ] && echo "run_all: miniature data: tables in $RESULTS/ show these runs as not comparable"
echo "run_all: tables and plots in $RESULTS/ (start at $RESULTS/index.md)"
[ ${#failed[@]} -eq 0 ]
