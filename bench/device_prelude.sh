# Sourced by the bench/run_device_*.sh scripts: the set-up every device call needs (device tool: no package index).
# Sets OUT (absolute), installs carried wheels (.whl/, pytest), installs the project from a copy of the checkout
# into /tmp/site_ag (passes/ and kernels/ become ascend_graph.passes / .kernels only when installed: the checkout is
# never imported bare), and moves to a copy of tests/ (pytest puts the folder above tests/ first on the path), with
# the checkout last on the path for bench/.
export PYTHONUNBUFFERED=1
REPO=$PWD
OUT=$(realpath -m "${OUT:-.out}")
mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then  # pytest travels as wheels: the device has no package index
  python3 -m pip install -q --no-index --no-deps --no-compile --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site
fi
rm -rf /tmp/site_ag /tmp/ag-src /tmp/ag-tests && mkdir -p /tmp/ag-src /tmp/ag-tests
cp -r pyproject.toml README.md ascend_graph passes kernels /tmp/ag-src/ && cp -r pyproject.toml tests /tmp/ag-tests/
(cd /tmp/ag-src && python3 -m pip install -q --no-deps --no-build-isolation --no-index --target /tmp/site_ag .) \
  >"$OUT/pip_install.log" 2>&1 || { tail -20 "$OUT/pip_install.log"; exit 1; }
export PYTHONPATH="/tmp/site_ag${PYTHONPATH:+:$PYTHONPATH}:$REPO"
cd /tmp/ag-tests
