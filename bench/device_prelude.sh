# Sourced by the bench/run_device_*.sh scripts: the set-up every device call needs (device tool: no package index,
# the checkout runs uninstalled). Sets OUT, installs carried wheels (.whl/, pytest) and puts the checkout on the path.
export PYTHONUNBUFFERED=1
OUT=${OUT:-.out}
mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then  # pytest travels as wheels: the device has no package index
  python3 -m pip install -q --no-index --no-deps --no-compile --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="${PYTHONPATH:+$PYTHONPATH:}$PWD"
