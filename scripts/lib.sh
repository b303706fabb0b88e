# Shared helpers for the scripts in this folder. Sourced, not run.

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

# cargo and rustc must exist; nothing else can be fetched for them here.
ensure_rust() {
    if ! command -v cargo >/dev/null 2>&1; then
        echo "cargo is required (install Rust with rustup: https://rustup.rs)" >&2
        exit 1
    fi
}

# Install Debian packages that are missing (as root, or through sudo).
ensure_apt() {
    local missing=()
    for pkg in "$@"; do
        dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    log "installing Debian packages: ${missing[*]}"
    local sudo=""
    [ "$(id -u)" -ne 0 ] && sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
}
