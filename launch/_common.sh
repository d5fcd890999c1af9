# Shared helpers for the launch scripts; sourced, not run.
# shellcheck shell=bash

DXNET_REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DRY_RUN=0

die() {
  echo "error: $*" >&2
  echo "run '$(basename "$0") --help' for usage" >&2
  exit 2
}

warn() { echo "warning: $*" >&2; }

# One word quoted for bash: as is when plain, else in single quotes (readable, exact).
quote_word() {
  if [[ "$1" =~ ^[A-Za-z0-9_./:=@%+,-]+$ ]]; then
    printf '%s' "$1"
  else
    local q="'\\''"
    printf "'%s'" "${1//\'/$q}"
  fi
}

# Print a command as one shell-quoted line that can be pasted into bash.
quote_cmd() {
  local out="" arg
  for arg in "$@"; do
    out+="$(quote_word "$arg") "
  done
  printf '%s\n' "${out% }"
}

# Run a command, or only print it with --dry-run. Real runs echo it to stderr first.
run() {
  if [[ "$DRY_RUN" == 1 ]]; then
    quote_cmd "$@"
  else
    echo "+ $(quote_cmd "$@")" >&2
    "$@"
  fi
}

# A comment line in the dry-run listing (to stderr in real runs).
note() {
  if [[ "$DRY_RUN" == 1 ]]; then echo "# $*"; else echo "# $*" >&2; fi
}

# Value of an option that takes an argument: `need_value --flag "$#" "${2-}"`.
need_value() {
  if [[ "$2" -lt 2 || -z "$3" || "$3" == --* ]]; then
    die "$1 needs a value"
  fi
}

is_uint() { [[ "$1" =~ ^[0-9]+$ ]]; }

check_positive_int() {  # name value
  is_uint "$2" && (( 10#$2 >= 1 )) || die "$1 must be a positive integer, got '$2'"
}

check_host_port() {  # name value
  [[ "$2" =~ ^[^:[:space:]]+:[0-9]+$ ]] || die "$1 must be HOST:PORT, got '$2'"
}

# The trainer's config argument may carry a suffix (configs/x.py:arg); check the file part.
check_config_path() {  # value
  local file="${1%%:*}"
  [[ "$file" == *.py ]] || die "--config must be a python config file (configs/<name>.py), got '$1'"
}

check_overrides() {  # trainer overrides after '--'
  local arg
  for arg in "$@"; do
    [[ "$arg" == --* ]] || die "trainer overrides after '--' must be flags like --config.key=value, got '$arg'"
  done
}
