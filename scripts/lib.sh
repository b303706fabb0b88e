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
    apt_install "${missing[@]}"
}

# apt-get install, as root or through sudo. A fresh machine may have another
# apt (unattended upgrades) holding the lock: wait for it up to 10 minutes
# rather than fail.
apt_install() {
    local sudo=""
    if [ "$(id -u)" -ne 0 ]; then
        if command -v sudo >/dev/null 2>&1; then sudo="sudo"; else
            echo "need root (or sudo) to install: $*" >&2
            exit 1
        fi
    fi
    local wait=(-o DPkg::Lock::Timeout=600)
    $sudo apt-get "${wait[@]}" update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get "${wait[@]}" install -y -qq --no-install-recommends "$@"
}
