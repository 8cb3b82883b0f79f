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
echo "ensure_java: no Java 17+"
source "$(dirname "$0")/apt_install.sh"
apt_install ensure_java openjdk-17-jre-headless
found=$(find_java) || { echo "ensure_java: installed openjdk-17-jre-headless but still no java 17+" >&2; exit 1; }
echo "ensure_java: installed Java $(java_major "$found") ($found)"
