#!/usr/bin/env bash
# Shows that the loom suite can fail: for each ordering below, copy the repository
# to a scratch directory, weaken that one ordering (in the file under src/ it names)
# to Relaxed, run the loom suite there (or only the test files the entry names), and
# expect it to fail. Exits non-zero if any
# weakening is NOT caught, if a pattern no longer matches exactly once (the script is
# then stale), or if the suite fails before anything is weakened (then nothing it
# reports would mean anything: the baseline run comes first).
#
#   loom-tests/weaken.sh            # all weakenings
#   loom-tests/weaken.sh publish    # only those whose name contains "publish"
#   loom-tests/weaken.sh =publish-release   # only the one named exactly so
#
# An entry may name the loom test targets (files in loom-tests/tests/, comma
# separated) whose models catch it; its weakened run then runs only those, e.g.
# `--test broadcast`. Without that field it runs the whole suite. The baseline run is
# always the whole suite.
#
# Reuses target/loom-weaken (separate from target/loom) so rebuilds are incremental;
# WEAKEN_TARGET_DIR overrides it. WEAKEN_SKIP_BASELINE=1 skips the baseline run.
#
# Orderings the models cannot catch are not listed; each is argued in place in the
# library (a comment saying which platform edge or which later access already orders
# it) and in loom-tests/README.md.
set -uo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
target="${WEAKEN_TARGET_DIR:-$root/target/loom-weaken}"
filter="${1:-}"

# name | file under src/ | line pattern (a fixed string found exactly once in that
# file) | from | to [| test targets]
weakenings=(
  # The claim step (ring/mod.rs), shared by send, receive and the crash hook.
  "claim-acquire|ring/mod.rs|// Acquire: pairs with the Release that made the slot ready for us: for a|NEXT:Ordering::Acquire|Ordering::Relaxed|queue"
  "run-slot-acquire|ring/mod.rs|if slot.sequence.load(Ordering::Acquire) != pos_add(next, end.ready_offset()) {|Ordering::Acquire|Ordering::Relaxed|batch"
  "run-store-release|ring/mod.rs|run_word.store(count, Ordering::Release);|Ordering::Release|Ordering::Relaxed|batch"
  "live-holder-run-acquire|ring/recovery.rs|let run = end.run_word(record).load(Ordering::Acquire);|Ordering::Acquire|Ordering::Relaxed|batch"
  "claim-record-release|ring/mod.rs|claim_word.store(pos, Ordering::Release);|Ordering::Release|Ordering::Relaxed|recovery"
  "claim-cas-seqcst|ring/mod.rs|match cursor.compare_exchange(|NEXT:Ordering::SeqCst|Ordering::Relaxed|wake"
  "claim-none-release|ring/mod.rs|claim_word.store(CLAIM_NONE, Ordering::Release);|Ordering::Release|Ordering::Relaxed|recovery"
  "publish-release|ring/mod.rs|slot.sequence.store(pos_add(pos, 1), Ordering::Release);|Ordering::Release|Ordering::Relaxed|queue"
  "release-slot-release|ring/mod.rs|.store(pos_add(pos, self.capacity), Ordering::Release);|Ordering::Release|Ordering::Relaxed|queue"
  # The recovery proof's sweeper side (ring/recovery.rs).
  "sweep-cursor-seqcst|ring/recovery.rs|let cursor = end.cursor(memory.shared()).load(Ordering::SeqCst);|Ordering::SeqCst|Ordering::Relaxed|recovery"
  "live-holder-claim-acquire|ring/recovery.rs|let claim = end.claim_word(record).load(Ordering::Acquire);|Ordering::Acquire|Ordering::Relaxed|recovery"
  "skip-publish-release|ring/recovery.rs|// Release: pairs with the consumer's Acquire load of the sequence, so|NEXT:Ordering::Release,|Ordering::Relaxed,|recovery"
  "live-holder-state-acquire|ring/recovery.rs|&& record.state.load(Ordering::Acquire) == participant::ACTIVE|Ordering::Acquire|Ordering::Relaxed|recovery"
  # A clean exit's record reset (ring/recovery.rs, unregister), as live_holder reads it.
  "unregister-enqueue-reset-release|ring/recovery.rs|record.enqueue_claim.store(CLAIM_NONE, Ordering::Release);|Ordering::Release|Ordering::Relaxed|recovery"
  "unregister-dequeue-reset-release|ring/recovery.rs|record.dequeue_claim.store(CLAIM_NONE, Ordering::Release);|Ordering::Release|Ordering::Relaxed|recovery"
  "unregister-state-release|ring/recovery.rs|record.state.store(participant::FREE, Ordering::Release);|Ordering::Release|Ordering::Relaxed|recovery"
  # The wake-up proof (ring/wake.rs). `park` and the async handle share its halves,
  # `register_waiter` (the increment, the epoch load) and `withdraw_waiter` (the
  # decrement); tests/wake.rs models the blocking waiter, tests/async_wake.rs the
  # task whose sleeping a waker thread does.
  "wake-waiters-seqcst|ring/wake.rs|if word.waiters.load(Ordering::SeqCst) != 0 {|Ordering::SeqCst|Ordering::Relaxed|wake"
  "park-waiters-seqcst|ring/wake.rs|word.waiters.fetch_add(1, Ordering::SeqCst);|Ordering::SeqCst|Ordering::Relaxed|wake"
  "readiness-tail-seqcst|ring/wake.rs|if pos_diff(sequence, pos_add(head, 1)) >= 0 {|Ordering::SeqCst|Ordering::Relaxed|wake"
  "readiness-head-seqcst|ring/wake.rs|if pos_diff(sequence, tail) >= 0 {|Ordering::SeqCst|Ordering::Relaxed|wake"
  "park-exit-seqcst|ring/wake.rs|word.waiters.fetch_sub(1, Ordering::SeqCst);|Ordering::SeqCst|Ordering::Relaxed|wake"
  # The create/open handshake (ready.rs).
  "ready-publish-release|ready.rs|state_word.store(state::READY, Ordering::Release);|Ordering::Release|Ordering::Relaxed|ready"
  "ready-check-acquire|ready.rs|state_word.load(Ordering::Acquire) == state::READY|Ordering::Acquire|Ordering::Relaxed|ready"
  # Broadcast segments (issue #14; docs/broadcast.md, "Orderings, paired"), caught by
  # the models in tests/broadcast.rs. Not listed (argued in place and in README.md):
  # the claim step's tail load and stamp Acquire, the lost claim's CLAIM_NONE
  # store, the joiner's cursor store, free_record's role store, the publisher's
  # readiness tail load and the epoch pair.
  "bcast-claim-record-release|broadcast/ring.rs|record.claim.store(pos, Ordering::Release);|Ordering::Release|Ordering::Relaxed|broadcast"
  "bcast-tail-cas-seqcst|broadcast/ring.rs|pos_add(pos, u64::from(count)),|Ordering::SeqCst|Ordering::Relaxed|broadcast"
  "bcast-writing-fence-release|broadcast/ring.rs|fence(Ordering::Release);|Ordering::Release|Ordering::Relaxed|broadcast"
  "bcast-publish-release|broadcast/ring.rs|slot.stamp.store(published(pos), Ordering::Release);|Ordering::Release|Ordering::Relaxed|broadcast"
  "bcast-recv-stamp-acquire|broadcast/ring.rs|// Acquire: pairs with the publisher's Release of the even stamp (or the|NEXT:Ordering::Acquire|Ordering::Relaxed|broadcast"
  "bcast-recheck-fence-acquire|broadcast/ring.rs|// Acquire: pairs with a later writer's Release fence after its odd stamp:|Ordering::Acquire|Ordering::Relaxed|broadcast"
  "bcast-cursor-store-seqcst|broadcast/ring.rs|cursor.store(next, Ordering::SeqCst);|Ordering::SeqCst|Ordering::Relaxed|broadcast"
  "bcast-gate-role-seqcst|broadcast/ring.rs|record.role.load(Ordering::SeqCst) != role::SUBSCRIBER {|Ordering::SeqCst|Ordering::Relaxed|broadcast"
  "bcast-gate-cursor-seqcst|broadcast/ring.rs|let cursor = record.cursor.load(Ordering::SeqCst);|Ordering::SeqCst|Ordering::Relaxed|broadcast"
  "bcast-wake-waiters-seqcst|broadcast/ring.rs|if word.waiters.load(Ordering::SeqCst) != 0 {|Ordering::SeqCst|Ordering::Relaxed|broadcast"
  "bcast-register-waiters-seqcst|broadcast/wake.rs|word.waiters.fetch_add(1, Ordering::SeqCst);|Ordering::SeqCst|Ordering::Relaxed|broadcast"
  "bcast-readiness-tail-seqcst|broadcast/wake.rs|if tail.load(Ordering::SeqCst) == pos {|Ordering::SeqCst|Ordering::Relaxed|broadcast"
  "bcast-withdraw-waiters-seqcst|broadcast/wake.rs|word.waiters.fetch_sub(1, Ordering::SeqCst);|Ordering::SeqCst|Ordering::Relaxed|broadcast"
  "bcast-join-role-seqcst|broadcast/recovery.rs|record.role.store(role::SUBSCRIBER, Ordering::SeqCst);|Ordering::SeqCst|Ordering::Relaxed|broadcast"
  "bcast-join-tail-seqcst|broadcast/recovery.rs|let start = tail.load(Ordering::SeqCst);|Ordering::SeqCst|Ordering::Relaxed|broadcast"
  "bcast-unregister-role-seqcst|broadcast/recovery.rs|waiter-count load below is the not-full wake-up protocol's other half.|NEXT:Ordering::SeqCst|Ordering::Relaxed|broadcast"
  "bcast-sweep-tail-seqcst|broadcast/recovery.rs|let tail = memory.shared().tail.value.load(Ordering::SeqCst);|Ordering::SeqCst|Ordering::Relaxed|broadcast"
  "bcast-live-holder-claim-acquire|broadcast/recovery.rs|let claim = record.claim.load(Ordering::Acquire);|Ordering::Acquire|Ordering::Relaxed|broadcast"
  "bcast-run-store-release|broadcast/ring.rs|record.run.store(count, Ordering::Release);|Ordering::Release|Ordering::Relaxed|broadcast"
  "bcast-live-holder-run-acquire|broadcast/recovery.rs|let run = record.run.load(Ordering::Acquire);|Ordering::Acquire|Ordering::Relaxed|broadcast"
  "bcast-live-holder-state-acquire|broadcast/recovery.rs|&& record.state.load(Ordering::Acquire) == participant::ACTIVE|Ordering::Acquire|Ordering::Relaxed|broadcast"
  "bcast-skip-release|broadcast/recovery.rs|.compare_exchange(stamp, published(pos), Ordering::Release, Ordering::Relaxed)|Ordering::Release|Ordering::Relaxed|broadcast"
  "bcast-unregister-claim-release|broadcast/recovery.rs|record.claim.store(CLAIM_NONE, Ordering::Release);|Ordering::Release|Ordering::Relaxed|broadcast"
  "bcast-unregister-state-release|broadcast/recovery.rs|record.state.store(participant::FREE, Ordering::Release);|Ordering::Release|Ordering::Relaxed|broadcast"
)

# Runs the loom suite in directory $1 with log $2 (only the test targets in $3, comma
# separated, if given); sets $status and $failed (the
# failing models: cargo's "failures:" list, plus the panicking test threads, since
# a loom deadlock can abort its test binary before the list is printed).
run_suite() {
  local targets=()
  local test_target
  local wanted="${3:-}"
  for test_target in ${wanted//,/ }; do
    targets+=(--test "$test_target")
  done
  (cd "$1" && RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR="$target" \
    cargo test -p loom-tests --release --no-fail-fast "${targets[@]}" >"$2" 2>&1)
  status=$?
  failed="$( (grep -E '^    [a-z_0-9]+$' "$2" | sed 's/^ *//'
              grep -oE "^thread '[a-z_0-9]+' \([0-9]+\) panicked" "$2" | cut -d"'" -f2) |
            sort -u | tr '\n' ' ')"
}

scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
missed=0
summary=()

copy_repository() {
  mkdir -p "$1"
  (cd "$root" && cp -r Cargo.toml Cargo.lock README.md src cli bridge loom-tests benches examples tests "$1/")
}

if [[ "${WEAKEN_SKIP_BASELINE:-0}" != 1 ]]; then
  copy_repository "$scratch/baseline"
  started=$(date +%s)
  run_suite "$scratch/baseline" "$scratch/baseline.log"
  if [[ $status -ne 0 ]]; then
    echo "BASELINE the unweakened suite fails (${failed:-no model named}); fix that first"
    tail -20 "$scratch/baseline.log"
    exit 2
  fi
  echo "baseline: every model passes unweakened ($(($(date +%s) - started))s)"
fi

weakened_started=$SECONDS
for entry in "${weakenings[@]}"; do
  IFS='|' read -r name source pattern from to tests <<<"$entry"
  if [[ "$filter" == =* ]]; then
    [[ "$name" != "${filter#=}" ]] && continue
  elif [[ -n "$filter" && "$name" != *"$filter"* ]]; then
    continue
  fi
  copy="$scratch/$name"
  copy_repository "$copy"
  file="$copy/src/$source"
  count="$(grep -cF -- "$pattern" "$file")"
  if [[ "$count" != 1 ]]; then
    echo "STALE   $name: pattern found $count times in src/$source"
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
  echo "weakened $name at src/$source:$target_line: $(sed -n "${target_line}p" "$file" | sed 's/^ *//')"
  log="$scratch/$name.log"
  started=$(date +%s)
  run_suite "$copy" "$log" "$tests"
  elapsed=$(($(date +%s) - started))
  if grep -qE '^error(\[E[0-9]+\])?: could not compile|^error\[E' "$log"; then
    line="ERROR   $name: the weakened copy does not build"
    tail -20 "$log"
    missed=1
  elif [[ $status -ne 0 && -n "$failed" ]]; then
    line="CAUGHT  $name in ${elapsed}s (${tests:-every} test target) by: $failed"
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
echo "weakened runs took $((SECONDS - weakened_started))s in all"

echo
echo "== summary =="
printf '%s\n' "${summary[@]}"
exit $missed
