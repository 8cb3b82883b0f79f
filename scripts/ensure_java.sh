#!/usr/bin/env bash
# Make sure a Java runtime for PySpark is installed (the Spark engine's tests run Spark in local mode).
# Idempotent: does nothing when `java` (17 or newer, which Spark 4 needs) is on PATH or JAVA_HOME. Otherwise
# installs Debian's `openjdk-17-jre-headless` with apt-get (as root, or through sudo when available).
set -euo pipefail

java_major() {
    local java_bin="$1" version
    version=$("$java_bin" -version 2>&1 | awk -F'"' '/version/ {print $2; exit}')
    version=${version#1.}
    echo "${version%%.*}"
}

find_java() {
    local candidate
    for candidate in "${JAVA_HOME:+$JAVA_HOME/bin/java}" "$(command -v java 2>/dev/null || true)"; do
        if [ -n "$candidate" ] && [ -x "$candidate" ] && [ "$(java_major "$candidate")" -ge 17 ] 2>/dev/null; then
            echo "$candidate"
            return 0
        fi
    done
    return 1
}

if found=$(find_java); then
    echo "ensure_java: Java $(java_major "$found") already present ($found); nothing to do"
    exit 0
fi
if [ "$(id -u)" -eq 0 ]; then
    as_root=()
elif command -v sudo >/dev/null 2>&1; then
    as_root=(sudo)
else
    echo "ensure_java: no Java 17+, and neither root nor sudo to install openjdk-17-jre-headless" >&2
    exit 1
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "ensure_java: no Java 17+ and no apt-get; install a Java 17 runtime by hand" >&2
    exit 1
fi
echo "ensure_java: no Java 17+; installing openjdk-17-jre-headless with apt-get"
"${as_root[@]}" apt-get update
# the JRE's post-install step expects the man page directory, absent from slim images
"${as_root[@]}" mkdir -p /usr/share/man/man1
"${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends openjdk-17-jre-headless
found=$(find_java) || { echo "ensure_java: installed openjdk-17-jre-headless but still no java 17+" >&2; exit 1; }
echo "ensure_java: installed Java $(java_major "$found") ($found)"
