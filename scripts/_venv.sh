# Sourced by scripts/demo and scripts/test: make sure .venv exists and holds this project.
# Re-installs only when pyproject.toml changed (the install is editable, so code changes need none).
# Usage: . scripts/_venv.sh [extras]   e.g. ". scripts/_venv.sh dev"
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
EXTRAS="${1:-}"
if [ ! -x "$VENV/bin/python" ]; then
    echo "scripts: creating $VENV with $(command -v python3)" >&2
    python3 -m venv "$VENV"
fi
want="$(cat "$ROOT/pyproject.toml" | sha256sum | cut -c1-16)-${EXTRAS:-base}"
stamp="$VENV/.certauth-installed"
have=""
[ -f "$stamp" ] && have="$(cat "$stamp")"
# A stamp for the dev extras also covers the base install.
if [ "$have" != "$want" ] && ! { [ -z "$EXTRAS" ] && [ "${have%-*}" = "${want%-*}" ]; }; then
    spec="."
    [ -n "$EXTRAS" ] && spec=".[$EXTRAS]"
    echo "scripts: installing this checkout ($spec, the certauth-toolkit distribution) into $VENV" >&2
    log="$(mktemp)"
    # Before 0.1.0 the distribution was named "certauth" (the name of an unrelated project on
    # PyPI); an install under the old name would leave a second record of the same package.
    if "$VENV/bin/python" -m pip show --quiet certauth >/dev/null 2>&1; then
        "$VENV/bin/python" -m pip uninstall --quiet --yes certauth >"$log" 2>&1 || true
    fi
    if ! "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -e "$ROOT/$spec" >"$log" 2>&1; then
        grep -v -E "^WARNING: Location .* is ignored" "$log" >&2 || true
        rm -f "$log"
        echo "scripts: installing certauth into $VENV failed (output above)" >&2
        exit 1
    fi
    rm -f "$log"
    echo "$want" > "$stamp"
fi
export PATH="$VENV/bin:$PATH"
