#!/usr/bin/env bash
# Train on a Cloud TPU VM slice: create it, install this package on every worker, run the
# trainer on all workers at once (one process per host, jax.distributed auto-detects the
# slice), stream the logs, and delete the TPU at the end.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"

usage() {
  cat <<'EOF'
Usage: launch/tpu_pod.sh --name NAME --zone ZONE --accelerator-type TYPE
                         --config configs/<experiment>.py --workdir gs://BUCKET/PATH
                         [options] [-- overrides]

Steps (each printed before it runs; --dry-run prints them and runs nothing):
  1. gcloud compute tpus tpu-vm create      (skipped with --reuse)
  2. install on --worker=all: the source (a tarball of this checkout, or a git clone) in
     ~/dxnet_jax, then `pip install -U <jax-spec> -e ~/dxnet_jax`; with --folder-data, copy
     the folder datasets to ~/dxnet_data
  3. on --worker=all: cd ~/dxnet_jax && TFDS_DATA_DIR=<data-dir> python3 -m dxnet_jax.main
     --config CONFIG --workdir WORKDIR [overrides]   (logs of all workers stream here)
  4. gcloud compute tpus tpu-vm delete --quiet   (always, even after a failure, unless --keep;
     a TPU given with --reuse is never deleted)

Required:
  --name NAME              TPU name (lower-case letters, digits, '-')
  --zone ZONE              e.g. us-central2-b (v4), us-east5-a (v5p), us-west4-a (v5e),
                           us-east1-d (v6e)
  --accelerator-type TYPE  slice, e.g. v4-32, v5p-64, v5litepod-32, v6e-64
  --config FILE            experiment config path inside the repo, e.g.
                           configs/imagenet.py:dxnet105
  --workdir gs://...       checkpoints and metrics; must be a bucket every worker can write

Options:
  --project PROJECT        GCP project (default: gcloud's configured core/project)
  --version RUNTIME        TPU software version (default by TPU generation: v2-alpha-tpuv6e,
                           v2-alpha-tpuv5, v2-alpha-tpuv5-lite, tpu-ubuntu2204-base)
  --data-dir gs://...      TFDS_DATA_DIR with the prepared tfds datasets (recommended: otherwise
                           every worker downloads and prepares its own copy)
  --folder-data gs://...   folder datasets (the layout of shared/data: Train400, T91, BSD200,
                           Set5, cifar10/...) copied to ~/dxnet_data on every worker with
                           `gcloud storage rsync`; the trainer gets DXNET_DATA_DIR=~/dxnet_data
  --source tarball|git     how the code reaches the workers (default tarball: this checkout's
                           tracked files including uncommitted edits, copied with tpu-vm scp)
  --git-url URL            repository for --source git
  --git-ref REF            branch, tag or commit for --source git (default: main)
  --src DIR                checkout to ship with --source tarball (default: this repo)
  --jax-spec SPEC          JAX requirement installed with the package (default: jax[tpu])
  --env KEY=VALUE          extra environment variable for the trainer (repeatable), e.g.
                           DXNET_HEARTBEAT_TIMEOUT=60
  --spot                   create a Spot TPU (cheaper, can be preempted)
  --reuse                  use an existing TPU named NAME (no create, no delete)
  --keep                   do not delete the TPU at the end
  --skip-install           do not copy/install the code (already on the workers)
  --internal-ip            ssh/scp over internal IPs (from a VM in the same VPC)
  --log FILE               also append the streamed logs to FILE
  --dry-run                print the commands that would run, run nothing
  -h, --help               this help

Trainer overrides: anything after `--`, and any --config.key=value flag, is passed on.

Example:
  launch/tpu_pod.sh --name dxnet-in105 --zone us-central2-b --accelerator-type v4-32 \
      --project my-proj --config configs/imagenet.py:dxnet105 \
      --workdir gs://my-bucket/runs/in105 --data-dir gs://my-bucket/tfds
EOF
}

NAME="" ZONE="" PROJECT="" ACCEL="" RUNTIME="" CONFIG="" WORKDIR="" DATA_DIR="" FOLDER_DATA=""
SOURCE=tarball GIT_URL="" GIT_REF=main SRC="$DXNET_REPO" JAX_SPEC="jax[tpu]"
SPOT=0 REUSE=0 KEEP=0 SKIP_INSTALL=0 INTERNAL_IP=0 LOG=""
EXTRA_ENV=() OVERRIDES=()
while (($#)); do
  if [[ "$1" == --*=* && "$1" != --config.* ]]; then set -- "${1%%=*}" "${1#*=}" "${@:2}"; fi
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --name) need_value "$1" "$#" "${2-}"; NAME="$2"; shift 2 ;;
    --zone) need_value "$1" "$#" "${2-}"; ZONE="$2"; shift 2 ;;
    --project) need_value "$1" "$#" "${2-}"; PROJECT="$2"; shift 2 ;;
    --accelerator-type) need_value "$1" "$#" "${2-}"; ACCEL="$2"; shift 2 ;;
    --version) need_value "$1" "$#" "${2-}"; RUNTIME="$2"; shift 2 ;;
    --config) need_value "$1" "$#" "${2-}"; CONFIG="$2"; shift 2 ;;
    --workdir) need_value "$1" "$#" "${2-}"; WORKDIR="$2"; shift 2 ;;
    --data-dir) need_value "$1" "$#" "${2-}"; DATA_DIR="$2"; shift 2 ;;
    --folder-data) need_value "$1" "$#" "${2-}"; FOLDER_DATA="$2"; shift 2 ;;
    --source) need_value "$1" "$#" "${2-}"; SOURCE="$2"; shift 2 ;;
    --git-url) need_value "$1" "$#" "${2-}"; GIT_URL="$2"; shift 2 ;;
    --git-ref) need_value "$1" "$#" "${2-}"; GIT_REF="$2"; shift 2 ;;
    --src) need_value "$1" "$#" "${2-}"; SRC="$2"; shift 2 ;;
    --jax-spec) need_value "$1" "$#" "${2-}"; JAX_SPEC="$2"; shift 2 ;;
    --env) need_value "$1" "$#" "${2-}"; EXTRA_ENV+=("$2"); shift 2 ;;
    --spot) SPOT=1; shift ;;
    --reuse) REUSE=1; shift ;;
    --keep) KEEP=1; shift ;;
    --skip-install) SKIP_INSTALL=1; shift ;;
    --internal-ip) INTERNAL_IP=1; shift ;;
    --log) need_value "$1" "$#" "${2-}"; LOG="$2"; shift 2 ;;
    --dry-run) DRY_RUN=1; shift ;;
    --config.*) OVERRIDES+=("$1"); shift ;;
    --) shift; OVERRIDES+=("$@"); break ;;
    *) die "unknown argument '$1'" ;;
  esac
done

# ------------------------------------------------------------------ validation
[[ -n "$NAME" ]] || die "--name is required"
[[ -n "$ZONE" ]] || die "--zone is required"
[[ -n "$ACCEL" ]] || die "--accelerator-type is required (e.g. v4-32, v5litepod-32, v6e-64)"
[[ -n "$CONFIG" ]] || die "--config is required"
[[ -n "$WORKDIR" ]] || die "--workdir is required"
[[ "$NAME" =~ ^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$ ]] || die "--name must be lower-case letters, digits and '-', starting with a letter, got '$NAME'"
[[ "$ZONE" =~ ^[a-z]+-[a-z]+[0-9]+-[a-z]$ ]] || die "--zone must look like us-central2-b, got '$ZONE'"
[[ -z "$PROJECT" || "$PROJECT" =~ ^[a-z][-a-z0-9:.]{4,}[a-z0-9]$ ]] || die "--project is not a valid project id: '$PROJECT'"
[[ "$ACCEL" =~ ^v([0-9]+)([a-z]*)-([0-9]+)$ ]] || die "--accelerator-type must look like v4-32, v5p-64, v5litepod-32 or v6e-64, got '$ACCEL'"
generation="v${BASH_REMATCH[1]}${BASH_REMATCH[2]}"
if [[ -z "$RUNTIME" ]]; then
  case "$generation" in
    v6e) RUNTIME=v2-alpha-tpuv6e ;;
    v5p) RUNTIME=v2-alpha-tpuv5 ;;
    v5litepod|v5e) RUNTIME=v2-alpha-tpuv5-lite ;;
    v2|v3|v4) RUNTIME=tpu-ubuntu2204-base ;;
    *) die "no default --version for TPU generation '$generation'; give --version" ;;
  esac
fi
check_config_path "$CONFIG"
[[ "$CONFIG" != /* ]] || die "--config must be a path inside the repository (configs/<name>.py), got '$CONFIG'"
[[ "$WORKDIR" == gs://?* ]] || die "--workdir must be a gs:// bucket path that every worker can write, got '$WORKDIR'"
[[ -z "$DATA_DIR" || "$DATA_DIR" == gs://?* ]] || die "--data-dir must be a gs:// bucket path, got '$DATA_DIR'"
[[ -z "$FOLDER_DATA" || "$FOLDER_DATA" == gs://?* ]] || die "--folder-data must be a gs:// bucket path, got '$FOLDER_DATA'"
[[ -n "$DATA_DIR" || -n "$FOLDER_DATA" ]] || warn "no --data-dir: each worker prepares its own copy of the datasets"
case "$SOURCE" in
  tarball)
    [[ -z "$GIT_URL" ]] || die "--git-url needs --source git"
    git -C "$SRC" rev-parse --git-dir >/dev/null 2>&1 || die "--src '$SRC' is not a git checkout"
    # The tarball holds the tracked files as they are now (commits plus uncommitted edits).
    SNAPSHOT="$(git -C "$SRC" stash create 2>/dev/null || true)"
    SNAPSHOT="${SNAPSHOT:-HEAD}"
    git -C "$SRC" cat-file -e "$SNAPSHOT:${CONFIG%%:*}" 2>/dev/null \
      || die "config '${CONFIG%%:*}' is not a tracked file of $SRC (untracked files are not shipped)"
    TARBALL="${TMPDIR:-/tmp}/dxnet_jax-$NAME.tar.gz"
    ;;
  git)
    [[ -n "$GIT_URL" ]] || die "--source git needs --git-url"
    ;;
  *) die "--source must be 'tarball' or 'git', got '$SOURCE'" ;;
esac
for kv in "${EXTRA_ENV[@]+"${EXTRA_ENV[@]}"}"; do
  [[ "$kv" =~ ^[A-Za-z_][A-Za-z0-9_]*=.*$ ]] || die "--env must be KEY=VALUE, got '$kv'"
done
check_overrides "${OVERRIDES[@]+"${OVERRIDES[@]}"}"
if [[ "$DRY_RUN" == 0 ]]; then
  command -v gcloud >/dev/null || die "gcloud not found (install the Google Cloud CLI)"
fi

# ------------------------------------------------------------------ commands
GC=(gcloud compute tpus tpu-vm)
WHERE=("--zone=$ZONE")
[[ -z "$PROJECT" ]] || WHERE+=("--project=$PROJECT")
SSH_OPTS=("${WHERE[@]}" --worker=all)
(( INTERNAL_IP == 0 )) || SSH_OPTS+=(--internal-ip)

# Remote shell command from words, each quoted for bash.
remote() { quote_cmd "$@"; }

CREATED=0
delete_tpu() {
  local rc=$?
  if (( CREATED == 1 && KEEP == 0 )); then
    note "deleting the TPU (pass --keep to keep it)"
    run "${GC[@]}" delete "$NAME" "${WHERE[@]}" --quiet || rc=$?
  elif (( CREATED == 1 )); then
    note "kept TPU $NAME; delete it with: $(quote_cmd "${GC[@]}" delete "$NAME" "${WHERE[@]}" --quiet)"
  fi
  exit "$rc"
}
trap delete_tpu EXIT
trap 'exit 130' INT TERM

if (( REUSE == 0 )); then
  note "1. create $ACCEL ($RUNTIME) in $ZONE"
  create=("${GC[@]}" create "$NAME" "${WHERE[@]}" "--accelerator-type=$ACCEL" "--version=$RUNTIME")
  (( SPOT == 0 )) || create+=(--spot)
  CREATED=1  # from here on a failure still deletes whatever was created
  run "${create[@]}"
else
  note "1. reuse the existing TPU $NAME"
fi

if (( SKIP_INSTALL == 0 )); then
  note "2. install the package on every worker"
  pip_cmd="python3 -m pip install -U $(printf '%q' "$JAX_SPEC") -e ~/dxnet_jax"
  if [[ "$SOURCE" == tarball ]]; then
    run git -C "$SRC" archive --format=tar.gz -o "$TARBALL" "$SNAPSHOT"
    run "${GC[@]}" scp "$TARBALL" "$NAME:dxnet_jax.tar.gz" "${SSH_OPTS[@]}"
    install="rm -rf ~/dxnet_jax && mkdir -p ~/dxnet_jax && tar -xzf ~/dxnet_jax.tar.gz -C ~/dxnet_jax && $pip_cmd"
  else
    install="rm -rf ~/dxnet_jax && git clone $(printf '%q' "$GIT_URL") ~/dxnet_jax && git -C ~/dxnet_jax checkout $(printf '%q' "$GIT_REF") && $pip_cmd"
  fi
  run "${GC[@]}" ssh "$NAME" "${SSH_OPTS[@]}" "--command=set -e; $install"
fi
if [[ -n "$FOLDER_DATA" ]]; then
  note "2b. copy the folder datasets to ~/dxnet_data on every worker"
  run "${GC[@]}" ssh "$NAME" "${SSH_OPTS[@]}" \
    "--command=mkdir -p ~/dxnet_data && gcloud storage rsync --recursive $(quote_word "$FOLDER_DATA") ~/dxnet_data"
fi

note "3. train on all workers"
train_env=()
[[ -z "$DATA_DIR" ]] || train_env+=("TFDS_DATA_DIR=$DATA_DIR")
train_env+=(${EXTRA_ENV[@]+"${EXTRA_ENV[@]}"})
data_export=""
[[ -z "$FOLDER_DATA" ]] || data_export='export DXNET_DATA_DIR="$HOME/dxnet_data" && '
train="cd ~/dxnet_jax && $data_export$(remote env ${train_env[@]+"${train_env[@]}"} python3 -m dxnet_jax.main \
  --config "$CONFIG" --workdir "$WORKDIR" ${OVERRIDES[@]+"${OVERRIDES[@]}"})"
ssh_train=("${GC[@]}" ssh "$NAME" "${SSH_OPTS[@]}" "--command=$train")
if [[ -n "$LOG" && "$DRY_RUN" == 0 ]]; then
  echo "+ $(quote_cmd "${ssh_train[@]}") 2>&1 | tee -a $(printf '%q' "$LOG")" >&2
  "${ssh_train[@]}" 2>&1 | tee -a "$LOG"
elif [[ -n "$LOG" ]]; then
  echo "$(quote_cmd "${ssh_train[@]}") 2>&1 | tee -a $(printf '%q' "$LOG")"
else
  run "${ssh_train[@]}"
fi
note "4. done"
