# Sourced by scripts/ensure_*.sh: `apt_install WHO PACKAGE` installs one Debian package with apt-get, as root
# or through sudo when available; fails with a message that starts with WHO when it cannot.
apt_install() {
    local who="$1" package="$2"
    local as_root=()
    if [ "$(id -u)" -ne 0 ]; then
        if ! command -v sudo >/dev/null 2>&1; then
            echo "$who: neither root nor sudo to install $package" >&2
            return 1
        fi
        as_root=(sudo)
    fi
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "$who: no apt-get to install $package; install it (or its equivalent) by hand" >&2
        return 1
    fi
    echo "$who: installing $package with apt-get"
    "${as_root[@]}" apt-get update
    # some packages' post-install steps (the JRE's) expect the man page directory, absent from slim images
    "${as_root[@]}" mkdir -p /usr/share/man/man1
    "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$package"
}
