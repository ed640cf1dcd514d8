#!/usr/bin/env bash
# Builds the hostagent .deb and/or .rpm into dist/ from this checkout.
#
#   packaging/build.sh deb|rpm|all      (make deb / make rpm call this)
#
# Both packages are made from one staging tree: the project's wheel plus every dependency as a
# wheel (for each supported CPython, so the package installs offline), a small installer that
# builds the private virtualenv /opt/hostagent/venv at install time, /usr/bin wrappers, the unit,
# the default config, man pages and completion. See packaging/README.md for why.
#
# Environment: PYTHON (a python with pip, default .venv/bin/python), RELEASE (package build
# number, default 1; a list such as "1 2" builds each from the same snapshot of the tree), PYTHON_VERSIONS (CPython versions to bundle wheels for), OUT (default dist).
set -euo pipefail
cd "$(dirname "$0")/.."
TOP=$PWD
what=${1:-all}
PYTHON=${PYTHON:-.venv/bin/python}
RELEASE=${RELEASE:-1}
PYTHON_VERSIONS=${PYTHON_VERSIONS:-"3.9 3.10 3.11 3.12 3.13"}
# Binary wheels for glibc 2.17..2.28 run on every target (Debian 10+, Ubuntu 20.04+, RHEL 8+).
# pip matches these tags literally, so all are listed.
PLATFORMS=${PLATFORMS:-"manylinux_2_28_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64"}
OUT=${OUT:-dist}
WORK=build/pkg
VERSION=$("$PYTHON" -c 'import tomllib,sys; print(tomllib.load(open("pyproject.toml","rb"))["project"]["version"])')
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1

log() { printf 'packaging: %s\n' "$*" >&2; }
t0=$(date +%s)

# --- 1. the project's wheel, built from the files git knows (tracked + untracked, not ignored), so
# stale build/ or egg-info leftovers never leak into it.
SRC=$TOP/$WORK/src  # everything below is built from this one snapshot of the tree
rm -rf "$SRC" "$WORK/project" && mkdir -p "$SRC" "$WORK/project"
git ls-files -z --cached --others --exclude-standard | while IFS= read -r -d '' f; do
  [ -e "$f" ] && printf '%s\0' "$f"; done | tar -c --null -T - | tar -x -C "$SRC"
"$PYTHON" -m pip wheel -q --no-deps -w "$WORK/project" "./$WORK/src"
wheel=$(ls "$WORK"/project/hostagent-"$VERSION"-*.whl)
log "project wheel: $wheel"
# ...and the same with the per-span stages compiled (setup.py, mypyc) for the build python's CPython
# only: pip on a host with that CPython prefers it to the pure wheel, every other host takes the
# pure one, and a host where the compiled library does not load runs the source it also carries
# (hostagent/compiled.py). --no-build-isolation: mypy (mypyc) comes from the build python's env.
rm -rf "$WORK/compiled" && mkdir -p "$WORK/compiled"
compiled_wheel=""
if HOSTAGENT_COMPILE=1 "$PYTHON" -m pip wheel -q --no-deps --no-build-isolation -w "$WORK/compiled" \
    "./$WORK/src" >"$WORK/compile.log" 2>&1; then
  compiled_wheel=$(ls "$WORK"/compiled/hostagent-"$VERSION"-*.whl)
  log "compiled wheel: $compiled_wheel"
else
  log "no compiled wheel (pure Python only); see $WORK/compile.log"
fi

# --- 2. the dependency wheelhouse, cached by the hash of pyproject.toml and the version list.
key=$(cat pyproject.toml <(echo "$PYTHON_VERSIONS $PLATFORMS") | sha256sum | cut -c1-16)
WH=$WORK/wheelhouse-$key
if [ ! -e "$WH/.complete" ]; then
  rm -rf "$WORK"/wheelhouse-* && mkdir -p "$WH"
  # Host CPython first with `pip wheel`: it also turns sdist-only dependencies into wheels (pure
  # Python ones), which the other versions then find through --find-links.
  "$PYTHON" -m pip wheel -q -w "$WH" "$wheel"
  # A CPython for which the requirements have no wheels (e.g. a dependency dropped it) is left
  # out, and the packages then require the oldest CPython that is left.
  supported=""
  for v in $PYTHON_VERSIONS; do
    if "$PYTHON" -m pip download -q --only-binary=:all: --python-version "$v" --implementation cp \
        $(printf -- '--platform %s ' $PLATFORMS) --find-links "$WH" -d "$WH" "$wheel" 2>"$WORK/pip-$v.log"; then
      log "dependency wheels for CPython $v"
      supported="$supported $v"
    else
      log "CPython $v left out: $(grep -m1 'No matching distribution' "$WORK/pip-$v.log" || tail -n1 "$WORK/pip-$v.log")"
    fi
  done
  [ -n "$supported" ] || { log "no CPython in '$PYTHON_VERSIONS' can satisfy the requirements"; exit 1; }
  echo $supported > "$WH/.pythons"
  # One pip for the installer, old enough to run on the oldest Python we support.
  oldest=$(cut -d' ' -f1 "$WH/.pythons")
  "$PYTHON" -m pip download -q --only-binary=:all: --python-version "$oldest" --no-deps -d "$WH" pip
  rm -f "$WH"/hostagent-*.whl
  touch "$WH/.complete"
fi
PY_MIN=$(cut -d' ' -f1 "$WH/.pythons")
log "bundled wheels for CPython $(cat "$WH/.pythons"); packages require python3 >= $PY_MIN"

# --- 3. the staging tree (the same for both formats except the unit directory).
stage() {  # $1 root, $2 unit dir
  local root=$1 unitdir=$2 opt=$1/opt/hostagent
  rm -rf "$root" && mkdir -p "$opt/wheels" "$opt/libexec" "$root/usr/bin" "$root/etc/hostagent" \
    "$root$unitdir" "$root/usr/share/bash-completion/completions" "$root/usr/share/man/man8" \
    "$root/usr/share/doc/hostagent"
  cp "$WH"/*.whl "$wheel" $compiled_wheel "$opt/wheels/"
  sed "s/@VERSION@/$VERSION/" $SRC/packaging/libexec/install-venv > "$opt/libexec/install-venv"
  chmod 0755 "$opt/libexec/install-venv"
  install -m 0755 $SRC/packaging/bin/hostagent $SRC/packaging/bin/hostagentctl "$root/usr/bin/"
  install -m 0644 $SRC/packaging/hostagent.toml "$root/etc/hostagent/hostagent.toml"
  install -m 0644 $SRC/packaging/systemd/hostagent.service "$root$unitdir/hostagent.service"
  install -m 0644 $SRC/packaging/completion/hostagent.bash "$root/usr/share/bash-completion/completions/hostagent"
  if [ -f $SRC/packaging/completion/hostagentctl.bash ]; then
    install -m 0644 $SRC/packaging/completion/hostagentctl.bash \
      "$root/usr/share/bash-completion/completions/hostagentctl"
  fi
  for m in $SRC/packaging/man/*.8; do gzip -9n < "$m" > "$root/usr/share/man/man8/$(basename "$m").gz"; done
  install -m 0644 $SRC/packaging/copyright "$root/usr/share/doc/hostagent/copyright"
  install -m 0644 $SRC/README.md "$root/usr/share/doc/hostagent/README.md"
}

mkdir -p "$OUT"
for RELEASE in $RELEASE; do
  if [ "$what" = deb ] || [ "$what" = all ]; then
    root=$WORK/deb-root
    stage "$root" /lib/systemd/system
    gzip -9n < $SRC/packaging/debian/changelog > "$root/usr/share/doc/hostagent/changelog.Debian.gz"
    mkdir -p "$root/DEBIAN"
    size=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
    sed -e "s/@VERSION@/$VERSION-$RELEASE/" -e "s/@SIZE@/$size/" -e "s/@PY_MIN@/$PY_MIN/" $SRC/packaging/debian/control > "$root/DEBIAN/control"
    install -m 0644 $SRC/packaging/debian/conffiles "$root/DEBIAN/conffiles"
    install -m 0755 $SRC/packaging/debian/postinst $SRC/packaging/debian/prerm $SRC/packaging/debian/postrm "$root/DEBIAN/"
    (cd "$root" && find . -path ./DEBIAN -prune -o -type f ! -path ./etc/\* -printf '%P\0' \
       | xargs -0 md5sum > DEBIAN/md5sums)
    deb=$OUT/hostagent_${VERSION}-${RELEASE}_amd64.deb
    # Wheels are already zip-compressed: a stronger compressor only costs time (xz: +60 s, -2%).
    dpkg-deb --root-owner-group -Zgzip -z1 --build "$root" "$deb" >/dev/null
    log "built $deb ($(du -h "$deb" | cut -f1))"
  fi

  if [ "$what" = rpm ] || [ "$what" = all ]; then
    root=$WORK/rpm-root
    stage "$root" /usr/lib/systemd/system
    top=$TOP/$WORK/rpmbuild
    rm -rf "$top" && mkdir -p "$top"/{SPECS,RPMS,BUILD,BUILDROOT}
    rpmbuild -bb --quiet --target x86_64 \
      --define "_topdir $top" --define "stage $TOP/$root" \
      --define "version_ $VERSION" --define "release_ $RELEASE" --define "py_min $PY_MIN" \
      $SRC/packaging/rpm/hostagent.spec >/dev/null
    rpm=$(ls "$top"/RPMS/x86_64/hostagent-"$VERSION"-"$RELEASE".*x86_64.rpm)
    cp "$rpm" "$OUT/"
    log "built $OUT/$(basename "$rpm") ($(du -h "$rpm" | cut -f1))"
  fi
done
log "done in $(( $(date +%s) - t0 )) s"
