#!/usr/bin/env bash
# Shows that the loom suite can fail: for each ordering below, copy the repository
# to a scratch directory, weaken that one ordering (in the file under src/ring/ it
# names) to Relaxed, run the loom suite there, and expect it to fail. Exits non-zero if any weakening is NOT
# caught (or if a pattern no longer matches exactly once: the script is then stale).
#
#   loom-tests/weaken.sh            # all weakenings
#   loom-tests/weaken.sh publish    # only those whose name contains "publish"
#
# Reuses target/loom-weaken (separate from target/loom) so rebuilds are incremental.
set -uo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
target="${WEAKEN_TARGET_DIR:-$root/target/loom-weaken}"
filter="${1:-}"

# name | file under src/ring/ | line pattern (a fixed string found exactly once in
# that file) | from | to
weakenings=(
  "claim-acquire|mod.rs|// Acquire: pairs with the Release that made the slot ready for us: for a|NEXT:Ordering::Acquire|Ordering::Relaxed"
  "claim-cas-seqcst|mod.rs|match cursor.compare_exchange(|NEXT:Ordering::SeqCst|Ordering::Relaxed"
  "publish-release|mod.rs|slot.sequence.store(pos_add(pos, 1), Ordering::Release);|Ordering::Release|Ordering::Relaxed"
  "release-slot-release|mod.rs|.store(pos_add(pos, self.capacity), Ordering::Release);|Ordering::Release|Ordering::Relaxed"
  "skip-publish-release|recovery.rs|// Release: pairs with the consumer's Acquire load of the sequence, so|NEXT:Ordering::Release,|Ordering::Relaxed,"
  "wake-waiters-seqcst|wake.rs|if word.waiters.load(Ordering::SeqCst) != 0 {|Ordering::SeqCst|Ordering::Relaxed"
  "park-waiters-seqcst|wake.rs|word.waiters.fetch_add(1, Ordering::SeqCst);|Ordering::SeqCst|Ordering::Relaxed"
)

scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
missed=0
summary=()

for entry in "${weakenings[@]}"; do
  IFS='|' read -r name source pattern from to <<<"$entry"
  [[ -n "$filter" && "$name" != *"$filter"* ]] && continue
  copy="$scratch/$name"
  mkdir -p "$copy"
  (cd "$root" && cp -r Cargo.toml Cargo.lock README.md src cli loom-tests benches examples tests "$copy/")
  file="$copy/src/ring/$source"
  count="$(grep -cF -- "$pattern" "$file")"
  if [[ "$count" != 1 ]]; then
    echo "STALE   $name: pattern found $count times in src/ring/$source"
    missed=1
    continue
  fi
  line="$(grep -nF -- "$pattern" "$file" | cut -d: -f1)"
  # NEXT: the ordering sits on the line after the comment; NEXT3: three lines after.
  case "$from" in
    NEXT:*) from="${from#NEXT:}"; line=$((line + 1)) ;;
    NEXT3:*) from="${from#NEXT3:}"; line=$((line + 3)) ;;
  esac
  # Find the first line at or after $line holding $from (within 8 lines) and weaken it.
  target_line="$(awk -v start="$line" -v pat="$from" 'NR >= start && NR < start + 8 && index($0, pat) { print NR; exit }' "$file")"
  if [[ -z "$target_line" ]]; then
    echo "STALE   $name: no '$from' near line $line"
    missed=1
    continue
  fi
  sed -i "${target_line}s/${from}/${to}/" "$file"
  echo "weakened $name at src/ring/$source:$target_line: $(sed -n "${target_line}p" "$file" | sed 's/^ *//')"
  log="$scratch/$name.log"
  started=$(date +%s)
  (cd "$copy" && RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR="$target" \
    cargo test -p loom-tests --release --no-fail-fast >"$log" 2>&1)
  status=$?
  elapsed=$(($(date +%s) - started))
  # Failing models: cargo's "failures:" list, plus the panicking test threads (a
  # loom deadlock can abort its test binary before the list is printed).
  failed="$( (grep -E '^    [a-z_0-9]+$' "$log" | sed 's/^ *//'
              grep -oE "^thread '[a-z_0-9]+' \([0-9]+\) panicked" "$log" | cut -d"'" -f2) |
            sort -u | tr '\n' ' ')"
  if grep -qE '^error(\[E[0-9]+\])?: could not compile|^error\[E' "$log"; then
    line="ERROR   $name: the weakened copy does not build"
    tail -20 "$log"
    missed=1
  elif [[ $status -ne 0 && -n "$failed" ]]; then
    line="CAUGHT  $name in ${elapsed}s by: $failed"
  elif [[ $status -ne 0 ]]; then
    line="ERROR   $name: the suite failed without naming a model (see below)"
    tail -20 "$log"
    missed=1
  else
    line="MISSED  $name: every loom model passed (${elapsed}s)"
    missed=1
  fi
  echo "$line"
  summary+=("$line")
done

echo
echo "== summary =="
printf '%s\n' "${summary[@]}"
exit $missed
