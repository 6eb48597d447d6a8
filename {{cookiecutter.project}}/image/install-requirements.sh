#!/bin/sh
# Install image/requirements.txt on top of apache-airflow==VERSION with this repo's constraints
# (constraints/airflow-VERSION.txt, when the repo has it). The one recipe for both places that
# must agree: the image (image/Dockerfile) and the DAG import check (make airflow-venv).
# Usage: install-requirements.sh PYTHON VERSION [ROOT]
set -eu
python=$1
version=$2
root=${3:-.}
requirements=$root/image/requirements.txt
constraints=$root/constraints/airflow-$version.txt
if ! grep -qEv '^[[:space:]]*(#|$)' "$requirements"; then
  echo "image/requirements.txt: no requirements, nothing to install"
  exit 0
fi
if [ -f "$constraints" ]; then
  set -- --constraint "$constraints"
else
  set --
fi
echo "==> installing image/requirements.txt over apache-airflow $version${1:+ with $constraints}"
"$python" -m pip install --no-cache-dir --disable-pip-version-check \
  "apache-airflow==$version" --requirement "$requirements" "$@"
