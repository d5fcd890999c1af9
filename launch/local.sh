#!/usr/bin/env bash
# Run the trainer on this machine's CPU: one process, optionally with fake CPU devices, or
# several processes on localhost joined by jax.distributed (the multi-host path, without hosts).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"

usage() {
  cat <<'EOF'
Usage: launch/local.sh --config configs/<experiment>.py --workdir DIR [options] [-- overrides]

Runs `python -m dxnet_jax.main --config CONFIG --workdir DIR [overrides]` on the CPU.

Options:
  --config FILE      experiment config, e.g. configs/quickstart.py (required)
  --workdir DIR      checkpoints, metrics and logs go here (required)
  --devices N        fake N CPU devices per process
                     (XLA_FLAGS=--xla_force_host_platform_device_count=N), to exercise
                     data parallelism on one CPU
  --processes N      start N trainer processes on localhost joined by jax.distributed
                     (gloo CPU collectives; DXNET_COORDINATOR/NUM_PROCESSES/PROCESS_ID set
                     for each); default 1. Process 0 prints to the terminal, the others to
                     DIR/logs/process_<i>.log
  --port PORT        coordinator port for --processes > 1 (default: a free port)
  --python PY        python interpreter (default: python3)
  --dry-run          print the commands that would run, run nothing
  -h, --help         this help

Trainer overrides: anything after `--`, and any --config.key=value flag, is passed on.

Examples:
  launch/local.sh --config configs/quickstart.py --workdir /tmp/quick
  launch/local.sh --config configs/quickstart.py --workdir /tmp/quick --devices 4 \
      --config.num_steps=20
  launch/local.sh --config configs/quickstart.py --workdir /tmp/q2 --processes 2 --devices 2
EOF
}

CONFIG="" WORKDIR="" DEVICES="" PROCESSES=1 PORT="" PYTHON=python3
OVERRIDES=()
while (($#)); do
  if [[ "$1" == --*=* && "$1" != --config.* ]]; then set -- "${1%%=*}" "${1#*=}" "${@:2}"; fi
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --config) need_value "$1" "$#" "${2-}"; CONFIG="$2"; shift 2 ;;
    --workdir) need_value "$1" "$#" "${2-}"; WORKDIR="$2"; shift 2 ;;
    --devices) need_value "$1" "$#" "${2-}"; DEVICES="$2"; shift 2 ;;
    --processes) need_value "$1" "$#" "${2-}"; PROCESSES="$2"; shift 2 ;;
    --port) need_value "$1" "$#" "${2-}"; PORT="$2"; shift 2 ;;
    --python) need_value "$1" "$#" "${2-}"; PYTHON="$2"; shift 2 ;;
    --dry-run) DRY_RUN=1; shift ;;
    --config.*) OVERRIDES+=("$1"); shift ;;
    --) shift; OVERRIDES+=("$@"); break ;;
    *) die "unknown argument '$1'" ;;
  esac
done

[[ -n "$CONFIG" ]] || die "--config is required"
[[ -n "$WORKDIR" ]] || die "--workdir is required"
check_config_path "$CONFIG"
[[ -f "${CONFIG%%:*}" ]] || die "config file not found: ${CONFIG%%:*} (paths are relative to $(pwd))"
[[ -z "$DEVICES" ]] || check_positive_int --devices "$DEVICES"
check_positive_int --processes "$PROCESSES"
if [[ -n "$PORT" ]]; then
  (( PROCESSES > 1 )) || die "--port only applies with --processes > 1"
  is_uint "$PORT" && (( 10#$PORT >= 1 && 10#$PORT <= 65535 )) || die "--port must be 1-65535, got '$PORT'"
fi
check_overrides "${OVERRIDES[@]+"${OVERRIDES[@]}"}"

ENV=(JAX_PLATFORMS=cpu)
if [[ -n "$DEVICES" ]]; then
  xla_flags="${XLA_FLAGS:+$XLA_FLAGS }--xla_force_host_platform_device_count=$DEVICES"
  ENV+=("XLA_FLAGS=$xla_flags")
fi
TRAIN=("$PYTHON" -m dxnet_jax.main --config "$CONFIG" --workdir "$WORKDIR"
       ${OVERRIDES[@]+"${OVERRIDES[@]}"})

if (( PROCESSES == 1 )); then
  run env "${ENV[@]}" "${TRAIN[@]}"
  exit 0
fi

if [[ -z "$PORT" ]]; then
  # A random high port that nothing listens on (a refused connection means free).
  for _ in {1..50}; do
    candidate=$((20000 + RANDOM % 40000))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$candidate") 2>/dev/null; then PORT=$candidate; break; fi
  done
  [[ -n "$PORT" ]] || die "found no free port; pass --port"
fi
LOGDIR="$WORKDIR/logs"
note "$PROCESSES processes on localhost, coordinator localhost:$PORT; process i>0 logs to $LOGDIR"
run mkdir -p "$LOGDIR"
PIDS=()
cleanup() {
  local pid
  for pid in "${PIDS[@]+"${PIDS[@]}"}"; do kill "$pid" 2>/dev/null || true; done
}
trap cleanup INT TERM
for ((i = 0; i < PROCESSES; i++)); do
  cmd=(env "${ENV[@]}" "DXNET_COORDINATOR=localhost:$PORT" "DXNET_NUM_PROCESSES=$PROCESSES"
       "DXNET_PROCESS_ID=$i" "${TRAIN[@]}")
  if [[ "$DRY_RUN" == 1 ]]; then
    if (( i == 0 )); then echo "$(quote_cmd "${cmd[@]}") &"
    else echo "$(quote_cmd "${cmd[@]}") > $(printf '%q' "$LOGDIR/process_$i.log") 2>&1 &"; fi
    continue
  fi
  echo "+ $(quote_cmd "${cmd[@]}") &" >&2
  if (( i == 0 )); then "${cmd[@]}" &
  else "${cmd[@]}" > "$LOGDIR/process_$i.log" 2>&1 & fi
  PIDS+=("$!")
done
if [[ "$DRY_RUN" == 1 ]]; then echo "wait"; exit 0; fi

# The first process to fail decides the exit status and the others are stopped (by pid): a
# process that dies before jax.distributed connects would otherwise leave its peers waiting for
# the initialisation timeout. After start-up jax.distributed itself stops the survivors within
# its heartbeat timeout.
for ((left = PROCESSES; left > 0; left--)); do
  rc=0
  wait -n "${PIDS[@]}" || rc=$?
  if (( rc != 0 )); then
    echo "error: a trainer process exited with status $rc; stopping the others (logs: $LOGDIR)" >&2
    cleanup
    wait || true
    exit "$rc"
  fi
done
