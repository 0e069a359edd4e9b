#!/usr/bin/env bash
# The storage-facing tests (everything that touches minio) on other minio versions than the
# project's venv has. By default the LOWEST version pyproject.toml's pin allows: the README's
# test command installs the highest (pip picks it), so the two ends of the pin are tested.
#
#   tests/minio_versions.sh [VERSION...]     e.g. tests/minio_versions.sh 7.2.5 7.2.12
#
# Needs the project's venv (.venv, or PROJECT_VENV) made by the README's test command, and
# RabbitMQ (the end-to-end tests). Each version gets a throwaway venv holding only that minio
# (from PyPI, with pip); everything else comes from the project's venv, which stays as it is.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${PROJECT_VENV:-.venv}
TESTS=(tests/unit/test_minio_private.py tests/unit/test_s3direct.py tests/unit/test_s3client.py
       tests/unit/test_storage_adapter.py tests/integration/test_multipart.py
       tests/integration/test_s3_direct.py tests/integration/test_minio_fallback.py
       tests/integration/test_reliability_storage.py tests/integration/test_s3_economy.py
       tests/integration/test_end_to_end.py)

[[ -x $VENV/bin/python ]] || {
    echo "minio_versions.sh: no project venv at $VENV (run the README's test command)" >&2
    exit 1
}
# the pin's ends, minio>=LOWEST,<=HIGHEST; the project's venv must have the highest
read -r lowest highest installed < <("$VENV/bin/python" - <<'PY'
import re, tomllib
import minio
deps = tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]
[pin] = [d for d in deps if re.match(r"minio\b", d)]
print(*(re.search(rf"{op}\s*([\d.]+)", pin).group(1) for op in (">=", "<=")), minio.__version__)
PY
)
[[ -n ${installed:-} ]] || { echo "minio_versions.sh: no minio>=X,<=Y pin in pyproject.toml" >&2; exit 1; }
versions=("$@")
if [[ ${#versions[@]} -eq 0 ]]; then
    [[ $installed == "$highest" ]] || {
        echo "minio_versions.sh: $VENV has minio $installed, not $highest, the highest the pin allows" >&2
        exit 1
    }
    versions=("$lowest")
fi

purelib='import sysconfig; print(sysconfig.get_paths()["purelib"])'
project_site=$("$VENV/bin/python" -c "$purelib")
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
for version in "${versions[@]}"; do
    venv=$scratch/minio-$version
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check --no-deps "minio==$version"
    # the project's venv after this one's own packages: its minio is shadowed by this one
    echo "import site; site.addsitedir('$project_site')" > "$("$venv/bin/python" -c "$purelib")/project-venv.pth"
    got=$("$venv/bin/python" -c 'import minio; print(minio.__version__)')
    [[ $got == "$version" ]] || { echo "minio_versions.sh: got minio $got, not $version" >&2; exit 1; }
    echo "minio_versions.sh: the storage-facing tests on minio $version"
    "$venv/bin/python" -m pytest -q -p no:cacheprovider "${TESTS[@]}"
done
