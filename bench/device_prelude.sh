# Sourced by the bench/run_device_*.sh scripts: the set-up every device call needs (device tool: no package index).
# Sets OUT (absolute), installs carried wheels (.whl/, pytest), installs the project into /tmp/site_ag
# (bench/install_project.sh) and moves to its copy of tests/, with the checkout last on the path for bench/.
export PYTHONUNBUFFERED=1
REPO=$PWD
OUT=$(realpath -m "${OUT:-.out}")
mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then  # pytest travels as wheels: the device has no package index
  python3 -m pip install -q --no-index --no-deps --no-compile --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site
fi
source bench/install_project.sh
install_project /tmp/site_ag "$OUT/pip_install.log" || exit 1
export PYTHONPATH="/tmp/site_ag${PYTHONPATH:+:$PYTHONPATH}:$REPO"
cd /tmp/ag-tests
