#!/usr/bin/env bash
# Headless Chromium + its WebDriver for the browser tests (tests/test_serve_browser.py, pytest -m
# browser), from Debian packages: chromium and chromium-driver (Debian 12: /usr/bin/chromium,
# /usr/bin/chromedriver, same version). Playwright's browser downloads are not used: this machine
# reaches the Debian mirror, not the browser CDNs.
#
#   bash scripts/install_browser.sh          install what is missing (idempotent), then check
#   bash scripts/install_browser.sh check    only check; status 1 when something is missing
#
# Installing needs root (as slurm/cluster.sh). Already installed: nothing is downloaded and the
# script returns in well under a second.
set -euo pipefail

PKGS=(chromium chromium-driver)
CHROMIUM=/usr/bin/chromium
DRIVER=/usr/bin/chromedriver

say() { echo "install_browser: $*"; }

missing_packages() {
    local p
    for p in "${PKGS[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || echo "$p"
    done
}

check() {
    local c d
    [[ -x $CHROMIUM && -x $DRIVER ]] || { say "$CHROMIUM or $DRIVER missing"; return 1; }
    c=$("$CHROMIUM" --version 2>/dev/null | grep -oE '[0-9]+\.[0-9.]+' | head -1 || true)
    d=$("$DRIVER" --version 2>/dev/null | grep -oE '[0-9]+\.[0-9.]+' | head -1 || true)
    if [[ -z $c || -z $d || ${c%%.*} != "${d%%.*}" ]]; then
        say "chromium ${c:-?} and chromedriver ${d:-?} differ in major version"
        return 1
    fi
    say "chromium $c, chromedriver $d"
}

if [[ ${1:-install} == check ]]; then
    check
    exit
fi

mapfile -t missing < <(missing_packages)
if ((${#missing[@]})); then
    if ((EUID != 0)); then
        say "missing ${missing[*]}; run as root (or: sudo apt-get install --no-install-recommends ${PKGS[*]})" >&2
        exit 1
    fi
    say "installing ${missing[*]}"
    apt-get -o DPkg::Lock::Timeout=300 update -qq
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -qq \
        --no-install-recommends "${PKGS[@]}" >/dev/null
fi
check
