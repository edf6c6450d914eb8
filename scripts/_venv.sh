# Sourced by scripts/demo and scripts/test (not run on its own).
#
# ensure_venv EXTRA  makes sure .venv (the project's virtual environment, ignored by git) exists
# and holds actorflow installed in editable mode with EXTRA ("" for none, "dev" for the test
# tools), then sets VENV_PYTHON to .venv/bin/python. The interpreter that creates .venv is
# $PYTHON, else python3; nothing is ever installed into it. pip runs again only when
# pyproject.toml or setup.cfg changed since the last install (a stamp file in .venv says).

VENV_DIR=.venv

venv_die() {
    printf '%s\n' "$@" >&2
    exit 1
}

# Python 3.11 or newer, or a message saying what to install.
venv_base_python() {
    local python=${PYTHON:-python3}
    if ! command -v "$python" >/dev/null 2>&1; then
        venv_die "$python was not found: actorflow needs Python 3.11 or newer." \
            "On Debian or Ubuntu: apt-get install python3 python3-venv (or set PYTHON=/path/to/python3.11)."
    fi
    local version
    version=$("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])') ||
        venv_die "$python does not run."
    if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
        venv_die "actorflow needs Python 3.11 or newer; $python is Python $version." \
            "Install a newer one and point PYTHON at it, e.g. PYTHON=python3.11 $0"
    fi
    printf '%s\n' "$python"
}

# True if .venv holds a working Python 3.11+ with pip.
venv_usable() {
    [ -x "$VENV_DIR/bin/python" ] &&
        "$VENV_DIR/bin/python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null &&
        "$VENV_DIR/bin/python" -m pip --version >/dev/null 2>&1
}

venv_create() {
    local python
    python=$(venv_base_python) || exit 1
    if [ -e "$VENV_DIR" ]; then
        if [ ! -f "$VENV_DIR/pyvenv.cfg" ]; then
            venv_die "$PWD/$VENV_DIR exists but is not a virtual environment; move it away and run $0 again."
        fi
        echo "$VENV_DIR does not work (no Python 3.11+ with pip in it): creating it again"
        rm -rf "$VENV_DIR"
    fi
    local missing
    missing=$("$python" -c '
missing = []
for name in ("venv", "ensurepip"):
    try:
        __import__(name)
    except ImportError:
        missing.append(name)
print(" ".join(missing))
')
    if [ -n "$missing" ]; then
        venv_die "$python has no $missing module, which creating $VENV_DIR needs." \
            "On Debian or Ubuntu install the python3-venv package: apt-get install python3-venv"
    fi
    echo "creating the virtual environment $VENV_DIR with $python"
    if ! "$python" -m venv "$VENV_DIR"; then
        rm -rf "$VENV_DIR"
        venv_die "$python -m venv $VENV_DIR failed (above)." \
            "On Debian or Ubuntu install the python3-venv package: apt-get install python3-venv"
    fi
    if ! venv_usable; then
        rm -rf "$VENV_DIR"
        venv_die "$VENV_DIR was created without a working pip." \
            "On Debian or Ubuntu install the python3-venv package: apt-get install python3-venv"
    fi
}

# What the install depends on: the packaging files and the Python version.
venv_fingerprint() {
    "$VENV_DIR/bin/python" -c '
import hashlib, sys
digest = hashlib.sha256(sys.version.encode())
for name in ("pyproject.toml", "setup.cfg"):
    with open(name, "rb") as file:
        digest.update(name.encode() + b"\0" + file.read())
print(digest.hexdigest())
'
}

ensure_venv() {
    local extra=$1
    venv_usable || venv_create
    local stamp_dir=$VENV_DIR/actorflow-installed
    local fingerprint
    fingerprint=$(venv_fingerprint)
    local current
    for current in "$extra" dev; do  # the dev install holds everything the plain one does
        if [ "$(cat "$stamp_dir/${current:-plain}" 2>/dev/null)" = "$fingerprint" ]; then
            VENV_PYTHON=$VENV_DIR/bin/python
            return 0
        fi
    done
    local target=.
    [ -n "$extra" ] && target=".[$extra]"
    echo "installing actorflow${extra:+ with the $extra extra} into $VENV_DIR (pip install -e '$target')"
    "$VENV_DIR/bin/python" -m pip install -q --disable-pip-version-check -e "$target" ||
        venv_die "pip could not install actorflow into $VENV_DIR (above); nothing was installed elsewhere."
    mkdir -p "$stamp_dir"
    rm -f "$stamp_dir"/*
    printf '%s\n' "$fingerprint" >"$stamp_dir/${extra:-plain}"
    VENV_PYTHON=$VENV_DIR/bin/python
}
