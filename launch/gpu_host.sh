#!/usr/bin/env bash
# Run the trainer on a multi-GPU host: one process that sees all (or the chosen) GPUs and
# shards each global batch over them. Several hosts: run this once per host with --num-nodes,
# --node-rank and --coordinator (one process per host, joined by jax.distributed).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"

usage() {
  cat <<'EOF'
Usage: launch/gpu_host.sh --config configs/<experiment>.py --workdir DIR [options] [-- overrides]

Runs `python -m dxnet_jax.main --config CONFIG --workdir DIR [overrides]` as one process using
every visible GPU (data parallel over a 1-D device mesh).

Options:
  --config FILE        experiment config, e.g. configs/cifar10.py:dxnet_12 (required)
  --workdir DIR        checkpoints/metrics directory: local path, or gs://... / a shared
                       file system for several nodes (required)
  --gpus LIST          GPUs to use, e.g. 0,1,2,3 (sets CUDA_VISIBLE_DEVICES; default: all)
  --data-dir DIR       TFDS_DATA_DIR for the datasets (default: tfds's own, ~/tensorflow_datasets)
  --num-nodes N        hosts in the job (default 1). With N > 1 also give:
  --node-rank R        this host's rank, 0..N-1 (rank 0 runs the coordinator)
  --coordinator H:P    address of rank 0 that every host can reach, e.g. 10.0.0.2:12355
  --install            first pip install the package and CUDA-enabled JAX
  --jax-spec SPEC      JAX requirement for --install (default: jax[cuda12])
  --python PY          python interpreter (default: python3)
  --dry-run            print the commands that would run, run nothing
  -h, --help           this help

Trainer overrides: anything after `--`, and any --config.key=value flag, is passed on.
Multi-node runs set DXNET_COORDINATOR, DXNET_NUM_PROCESSES and DXNET_PROCESS_ID for
dxnet_jax.distributed.initialize(); DXNET_HEARTBEAT_TIMEOUT etc. are inherited if exported.

Examples:
  launch/gpu_host.sh --config configs/cifar10.py:dxnet_12 --workdir runs/c10
  launch/gpu_host.sh --config configs/imagenet.py:dxnet105 --workdir gs://b/in105 \
      --data-dir gs://b/tfds --num-nodes 2 --node-rank 0 --coordinator 10.0.0.2:12355
EOF
}

CONFIG="" WORKDIR="" GPUS="" DATA_DIR="" NUM_NODES=1 NODE_RANK="" COORDINATOR=""
INSTALL=0 JAX_SPEC="jax[cuda12]" PYTHON=python3
OVERRIDES=()
while (($#)); do
  if [[ "$1" == --*=* && "$1" != --config.* ]]; then set -- "${1%%=*}" "${1#*=}" "${@:2}"; fi
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --config) need_value "$1" "$#" "${2-}"; CONFIG="$2"; shift 2 ;;
    --workdir) need_value "$1" "$#" "${2-}"; WORKDIR="$2"; shift 2 ;;
    --gpus) need_value "$1" "$#" "${2-}"; GPUS="$2"; shift 2 ;;
    --data-dir) need_value "$1" "$#" "${2-}"; DATA_DIR="$2"; shift 2 ;;
    --num-nodes) need_value "$1" "$#" "${2-}"; NUM_NODES="$2"; shift 2 ;;
    --node-rank) need_value "$1" "$#" "${2-}"; NODE_RANK="$2"; shift 2 ;;
    --coordinator) need_value "$1" "$#" "${2-}"; COORDINATOR="$2"; shift 2 ;;
    --install) INSTALL=1; shift ;;
    --jax-spec) need_value "$1" "$#" "${2-}"; JAX_SPEC="$2"; shift 2 ;;
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
[[ -z "$GPUS" || "$GPUS" =~ ^[0-9]+(,[0-9]+)*$ ]] || die "--gpus must be a comma-separated list of GPU indices, got '$GPUS'"
check_positive_int --num-nodes "$NUM_NODES"
if (( NUM_NODES > 1 )); then
  [[ -n "$NODE_RANK" ]] || die "--num-nodes $NUM_NODES needs --node-rank (0..$((NUM_NODES - 1)))"
  [[ -n "$COORDINATOR" ]] || die "--num-nodes $NUM_NODES needs --coordinator HOST:PORT (the address of rank 0)"
  is_uint "$NODE_RANK" && (( 10#$NODE_RANK < NUM_NODES )) || die "--node-rank must be in 0..$((NUM_NODES - 1)), got '$NODE_RANK'"
  check_host_port --coordinator "$COORDINATOR"
  [[ "$WORKDIR" == gs://* ]] || warn "with several nodes --workdir must be shared by all of them (gs://... or a shared file system); '$WORKDIR' looks local"
else
  [[ -z "$NODE_RANK" && -z "$COORDINATOR" ]] || die "--node-rank and --coordinator need --num-nodes > 1"
fi
check_overrides "${OVERRIDES[@]+"${OVERRIDES[@]}"}"

if (( INSTALL )); then
  run "$PYTHON" -m pip install -U "$JAX_SPEC" -e "$DXNET_REPO"
fi

ENV=()
[[ -z "$GPUS" ]] || ENV+=("CUDA_VISIBLE_DEVICES=$GPUS")
[[ -z "$DATA_DIR" ]] || ENV+=("TFDS_DATA_DIR=$DATA_DIR")
if (( NUM_NODES > 1 )); then
  ENV+=("DXNET_COORDINATOR=$COORDINATOR" "DXNET_NUM_PROCESSES=$NUM_NODES" "DXNET_PROCESS_ID=$NODE_RANK")
fi
run env ${ENV[@]+"${ENV[@]}"} "$PYTHON" -m dxnet_jax.main --config "$CONFIG" --workdir "$WORKDIR" \
  ${OVERRIDES[@]+"${OVERRIDES[@]}"}
