#!/usr/bin/env bash
# Checks what scripts/package.sh built in target/dist/: lintian finds no error in the .deb;
# the package installs into a scratch root (dpkg --root, maintainer scripts included), where
# `systemd-analyze verify` passes on the installed units, `dmstrack check` passes on the
# installed config under the units' environment, `status` reads $STATE_DIRECTORY, the man
# pages render and `dmstrack demo` runs; removal keeps the conffiles and purge drops them;
# the tarball holds what docs/install.md says.
#
# Usage: scripts/check-package.sh   (after scripts/package.sh; installs lintian when missing)
# Nothing is installed on this machine itself: the scratch root is a temporary folder.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

shopt -s nullglob
debs=(target/dist/dmstrack_*.deb)
tarballs=(target/dist/dmstrack-*-linux.tar.gz)
if [[ ${#debs[@]} -ne 1 || ${#tarballs[@]} -ne 1 ]]; then
    echo "check-package: expected one .deb and one tarball in target/dist (run scripts/package.sh)" >&2
    exit 2
fi
deb="${debs[0]}"
tarball="${tarballs[0]}"

if ! command -v lintian >/dev/null 2>&1; then
    echo "check-package: installing lintian" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends lintian >/dev/null
fi
# lintian warns when run as root; that is the CI machine's normal state.
echo "lintian $(lintian --version | awk '{print $2}') on $deb:"
if ! lintian --fail-on error --display-info "$deb" 2> >(grep -v 'root privileges' >&2); then
    echo "check-package: lintian found errors" >&2
    exit 1
fi
echo "lintian: no errors"

scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT

# The maintainer scripts may reload systemd and restart or stop what runs, never enable or
# start a unit: an unconfigured service must stay off.
dpkg-deb -e "$deb" "$scratch/control"
if grep -nE 'systemctl +(--[a-z-]+ +)*(enable|start|restart|reenable)\b|deb-systemd-invoke +(start|restart)\b|deb-systemd-helper +enable\b' \
    "$scratch"/control/{preinst,postinst,prerm,postrm} 2>/dev/null; then
    echo "check-package: a maintainer script enables or starts a unit" >&2
    exit 1
fi
echo "maintainer scripts: reload systemd, restart only what runs, never enable or start"
inst="$scratch/root"
mkdir -p "$inst/var/lib/dpkg/info" "$inst/var/lib/dpkg/updates"
touch "$inst/var/lib/dpkg/status"
# The scratch root has no libc6 package registered: --force-depends. The maintainer scripts
# run on this host with DPKG_ROOT set (--force-script-chrootless) and must leave it alone.
dpkg_root() { dpkg --root="$inst" --force-script-chrootless --force-depends "$@"; }
dpkg_root -i "$deb" >"$scratch/dpkg.log" 2>&1 || {
    cat "$scratch/dpkg.log" >&2
    exit 1
}
echo "dpkg --root: installed $(dpkg-deb -f "$deb" Package) $(dpkg-deb -f "$deb" Version)"

for path in usr/bin/dmstrack etc/dmstrack/config.toml etc/default/dmstrack \
    usr/lib/systemd/system/dmstrack.service usr/lib/systemd/system/dmstrack@.service \
    usr/lib/systemd/system/dmstrack-once.service usr/lib/systemd/system/dmstrack-once.timer \
    usr/share/man/man1/dmstrack.1.gz usr/share/bash-completion/completions/dmstrack \
    usr/share/zsh/vendor-completions/_dmstrack usr/share/fish/vendor_completions.d/dmstrack.fish \
    usr/share/doc/dmstrack/copyright; do
    [[ -e "$inst/$path" ]] || {
        echo "check-package: /$path is not in the package" >&2
        exit 1
    }
done
if ! diff -q config/dmstrack.example.toml "$inst/etc/dmstrack/config.toml" >/dev/null; then
    echo "check-package: /etc/dmstrack/config.toml is not the shipped example" >&2
    exit 1
fi

scripts/verify-systemd-units.sh --root "$inst"

# The installed config under the environment dmstrack.service gives it, as its ExecReload=
# runs it. The variables stand in for a RAM role; the metadata service is never asked.
bin="$inst/usr/bin/dmstrack"
unit_env=(
    env -i PATH="$PATH"
    STATE_DIRECTORY="$inst/var/lib/dmstrack"
    CONFIGURATION_DIRECTORY="$inst/etc/dmstrack"
    ALIBABA_CLOUD_ECS_METADATA_DISABLED=true
    ALIBABA_CLOUD_ACCESS_KEY_ID=LTAIpackagecheck
    ALIBABA_CLOUD_ACCESS_KEY_SECRET=package-check-secret
)
"${unit_env[@]}" "$bin" check
mkdir -p "$inst/var/lib/dmstrack"
status_err="$("${unit_env[@]}" "$bin" status --json 2>&1 >/dev/null)"
grep -qF "state folder: $inst/var/lib/dmstrack" <<<"$status_err" || {
    echo "check-package: status did not read \$STATE_DIRECTORY: $status_err" >&2
    exit 1
}
echo "dmstrack check and status: OK on the installed config ($status_err)"

for page in "$inst"/usr/share/man/man1/*.1.gz; do
    if warnings="$(MANWIDTH=80 man --warnings -l "$page" 2>&1 >/dev/null)" && [[ -z "$warnings" ]]; then
        continue
    fi
    echo "check-package: $(basename "$page") renders with warnings: $warnings" >&2
    exit 1
done
echo "man pages: $(find "$inst/usr/share/man/man1" -name '*.1.gz' | wc -l) render cleanly"

"$bin" demo --dir "$scratch/demo" >"$scratch/demo.log" 2>&1 || {
    cat "$scratch/demo.log" >&2
    echo "check-package: dmstrack demo failed with the packaged binary" >&2
    exit 1
}
echo "dmstrack demo: OK with the packaged binary"

dpkg_root -r dmstrack >/dev/null
[[ -f "$inst/etc/dmstrack/config.toml" && ! -e "$inst/usr/bin/dmstrack" ]] || {
    echo "check-package: removal must keep the conffiles and drop the rest" >&2
    exit 1
}
dpkg_root -P dmstrack >/dev/null
[[ ! -e "$inst/etc/dmstrack/config.toml" && ! -e "$inst/etc/default/dmstrack" ]] || {
    echo "check-package: purge must drop the conffiles" >&2
    exit 1
}
echo "dpkg --root: remove keeps the conffiles, purge drops them"

listing="$(tar -tzf "$tarball")"
for member in dmstrack LICENSE README.md systemd/dmstrack.service systemd/dmstrack@.service \
    systemd/dmstrack-once.service systemd/dmstrack-once.timer config/dmstrack.example.toml \
    man/dmstrack.1.gz completions/dmstrack.bash completions/_dmstrack completions/dmstrack.fish; do
    grep -qE "^[^/]+/$member\$" <<<"$listing" || {
        echo "check-package: $tarball has no $member" >&2
        exit 1
    }
done
echo "tarball: $(wc -l <<<"$listing") entries, binary, units, config, man pages, completions, LICENSE"
