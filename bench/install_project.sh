# Sourced by bench/gpu_lane.sh and bench/device_prelude.sh: how a device run installs the project.
# The checkout is never imported bare: passes/ and kernels/ become ascend_graph.passes / .kernels only when
# installed. The build runs in a copy, since a build in the checkout leaves ascend_graph.egg-info there and any
# process started in the checkout would then find the plugin's entry points (seen: a "stock" baseline that ran
# ascend_graph). The tests run from a copy too: pytest puts the folder above tests/ first on the path.
install_project() {  # install_project SITE LOG: the project into SITE (pip --target), tests/ into /tmp/ag-tests
  rm -rf "$1" /tmp/ag-src /tmp/ag-tests && mkdir -p /tmp/ag-src /tmp/ag-tests
  cp -r pyproject.toml README.md ascend_graph passes kernels /tmp/ag-src/ && cp -r pyproject.toml tests /tmp/ag-tests/
  (cd /tmp/ag-src && python3 -m pip install -q --no-deps --no-build-isolation --no-index --target "$1" .) >"$2" 2>&1 \
    || { tail -20 "$2"; return 1; }
}
