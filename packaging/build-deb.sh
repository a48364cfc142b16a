#!/bin/sh
# Builds target/debian/lazarus-pit_<version>_<arch>.deb with cargo-deb,
# after checking that the committed man page and completions match the
# binary (they are generated from its command-line definition).
#
#   packaging/build-deb.sh            build (installs cargo-deb if missing)
#   packaging/build-deb.sh --check    build, then list the package's files
set -eu
cd "$(dirname "$0")/.."
command -v cargo-deb >/dev/null 2>&1 || cargo install cargo-deb --locked
cargo build --release --locked
bin=target/release/lazarus-pit
stale=""
for pair in "completions bash:packaging/completions/lazarus-pit.bash" \
            "completions zsh:packaging/completions/_lazarus-pit" \
            "completions fish:packaging/completions/lazarus-pit.fish" \
            "man:packaging/man/lazarus-pit.1"; do
    args=${pair%%:*}
    file=${pair#*:}
    # shellcheck disable=SC2086
    if ! "$bin" $args | cmp -s - "$file"; then
        stale="$stale $file"
    fi
done
if [ -n "$stale" ]; then
    echo "build-deb: out of date:$stale" >&2
    echo "build-deb: regenerate with: UPDATE_PACKAGING=1 cargo test packaging" >&2
    exit 1
fi
cargo deb --no-build
deb=$(ls -t target/debian/lazarus-pit_*.deb | head -n 1)
echo "$deb"
if [ "${1:-}" = --check ]; then
    dpkg-deb --contents "$deb"
fi
