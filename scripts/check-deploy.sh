#!/usr/bin/env bash
# Checks everything under deploy/ without a cluster or a Docker engine (the images themselves,
# a cluster of containers and the systemd units are run by scripts/check-containers.sh and
# scripts/check-systemd.sh, which scripts/test.sh runs first where Docker answers):
#   1. builds the release binaries the Dockerfiles build (same cargo command), or takes them
#      from DEPLOY_BIN_DIR (scripts/test.sh passes the images' own);
#   2. renders both Kubernetes overlays, the sweep-submit Job (deploy/k8s/submit), and a site
#      overlay made the way docs/DEPLOY.md says (secrets and admin token from
#      `coordinator tls init`), with kubectl's kustomize;
#   3. validates every rendered object against the Kubernetes schemas (kubernetes-validate,
#      offline, strict);
#   4. runs the checkov policy scan on the rendered manifests and on the Dockerfiles;
#   5. deploy/lint.py: parses the Dockerfiles, checks every flag the manifests (the Job's
#      `coordinator submit` included), images and systemd units pass to the binaries against
#      their --help, that every path a container is given is mounted (Secret and ConfigMap
#      keys included), and that the images, manifests, units and container test agree with
#      deploy/contract.yaml (image names and tags, command lines, ports, uid, mounts);
#   6. scrapes /metrics of the release coordinator and worker, and checks with
#      deploy/grafana/check.py that what they export is documented (docs/METRICS.md), tested
#      (tests/tests/metrics.rs) and all the Grafana dashboard names; promtool checks the
#      monitoring overlay's scrape jobs.
# Any failure fails the script. Tools are pinned and installed into .venv-deploy.
set -euo pipefail
cd "$(dirname "$0")/.."
out=out/deploy-check
rm -rf "$out" && mkdir -p "$out"

venv=.venv-deploy
if [[ ! -x $venv/bin/checkov ]] || ! cmp -s scripts/deploy-requirements.txt "$venv/requirements.txt"; then
    echo "check-deploy: installing kubectl, kubernetes-validate and checkov into $venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r scripts/deploy-requirements.txt
    cp scripts/deploy-requirements.txt "$venv/requirements.txt"
fi
kubectl="$venv/bin/kubectl"

# DEPLOY_BIN_DIR: release binaries built elsewhere (scripts/test.sh passes the images' own,
# which scripts/check-containers.sh copied out); the worker's libtorch is then this checkout's.
bin=${DEPLOY_BIN_DIR:-target/release}
if [[ -z ${DEPLOY_BIN_DIR:-} ]]; then
    echo "check-deploy: cargo build --release --locked -p coordinator -p worker (what the Dockerfiles run)"
    cargo build --release --locked -p coordinator -p worker
else
    echo "check-deploy: checking the binaries in $bin"
    export LD_LIBRARY_PATH=$PWD/.libtorch/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
fi

# A site overlay as docs/DEPLOY.md builds it, to prove that flow renders too.
site=$out/site
mkdir -p "$site"
"$bin/coordinator" tls init --out "$site/secrets" --host sweep-coordinator \
    --host sweep-coordinator.sweep.svc --force > /dev/null
cat > "$site/kustomization.yaml" <<YAML
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - ../../../deploy/k8s/overlays/gpu
secretGenerator:
  - name: sweep-token
    namespace: sweep
    behavior: replace
    files: [secrets/token]
  - name: sweep-admin-token
    namespace: sweep
    behavior: replace
    files: [secrets/admin-token]
  - name: sweep-coordinator-tls
    namespace: sweep
    behavior: replace
    files: [secrets/server.pem, secrets/server-key.pem, secrets/ca.pem]
  - name: sweep-worker-tls
    namespace: sweep
    behavior: replace
    files: [secrets/ca.pem, secrets/worker.pem, secrets/worker-key.pem]
YAML

rendered=()
for overlay in deploy/k8s/overlays/gpu deploy/k8s/overlays/cpu-only deploy/k8s/overlays/monitoring deploy/k8s/submit "$site"; do
    name=$(basename "$overlay")
    "$kubectl" kustomize "$overlay" > "$out/$name.yaml"
    rendered+=("$out/$name.yaml")
    echo "check-deploy: rendered $overlay ($(grep -c '^kind:' "$out/$name.yaml") objects)"
done
grep -q 'nvidia.com/gpu: 1' "$out/gpu.yaml" || { echo "gpu overlay requests no GPU" >&2; exit 1; }
if grep -q 'nvidia.com/gpu' "$out/cpu-only.yaml"; then echo "cpu-only overlay mentions GPUs" >&2; exit 1; fi
grep -q '^kind: Job' "$out/submit.yaml" || { echo "deploy/k8s/submit renders no Job" >&2; exit 1; }
# The site's admin token is the generated one (not the empty placeholder) and not the worker's.
"$venv/bin/python" - "$out/site.yaml" <<'PY'
import sys, yaml
data = {d["metadata"]["name"]: d.get("data") or {} for d in yaml.safe_load_all(open(sys.argv[1]))
        if d and d["kind"] == "Secret"}
admin, worker = data["sweep-admin-token"].get("admin-token"), data["sweep-token"].get("token")
if not admin or admin == worker:
    sys.exit("site overlay: the admin token is not replaced, or equals the worker token")
PY

"$venv/bin/kubernetes-validate" --strict --quiet "${rendered[@]}"
echo "check-deploy: schemas ok (kubernetes-validate --strict)"

# The scan must not phone home (no network here); skip-download keeps it offline.
export BC_SKIP_MAPPING=TRUE CHECKOV_RUN_SCA_PACKAGE_SCAN_V2=false
mkdir -p "$out/scan" && cp "$out/gpu.yaml" "$out/cpu-only.yaml" "$out/submit.yaml" "$out/scan/"
"$venv/bin/checkov" --quiet --compact --skip-download --framework kubernetes -d "$out/scan"
"$venv/bin/checkov" --quiet --compact --skip-download --framework dockerfile -d deploy/docker
echo "check-deploy: checkov ok"

"$venv/bin/python" deploy/lint.py "$bin" "${rendered[@]}"

# Metrics: what the release binaries export is documented, the documented ones are read back
# through a real Prometheus by tests/tests/metrics.rs, and the Grafana dashboard names only
# them (deploy/grafana/check.py).
grep -q 'prometheus.io/scrape' "$out/monitoring.yaml" || { echo "monitoring overlay has no scrape annotations" >&2; exit 1; }
scrape_dir=$out/scrape
mkdir -p "$scrape_dir"
token=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
free_port() { "$venv/bin/python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
http=$(free_port); grpc=$(free_port); whttp=$(free_port)
SWEEP_TOKEN=$token SWEEP_ADMIN_TOKEN=$token-admin "$bin/coordinator" serve --listen "127.0.0.1:$grpc" \
    --http-listen "127.0.0.1:$http" --db "$scrape_dir/check.db" > "$scrape_dir/coordinator.log" 2>&1 &
coordinator_pid=$!
SWEEP_TOKEN=$token "$bin/worker" --coordinator "http://127.0.0.1:$grpc" --device cpu \
    --health-listen "127.0.0.1:$whttp" > "$scrape_dir/worker.log" 2>&1 &
worker_pid=$!
trap 'kill $coordinator_pid $worker_pid 2>/dev/null || true' EXIT INT TERM
fetch() {
    for _ in $(seq 100); do
        "$venv/bin/python" -c 'import sys, urllib.request; sys.stdout.write(urllib.request.urlopen(sys.argv[1], timeout=2).read().decode())' "$1" > "$2" 2>/dev/null && return 0
        sleep 0.1
    done
    echo "check-deploy: $1 did not answer" >&2
    tail -n 20 "$scrape_dir/coordinator.log" "$scrape_dir/worker.log" >&2
    return 1
}
fetch "http://127.0.0.1:$http/metrics" "$scrape_dir/coordinator.txt"
fetch "http://127.0.0.1:$whttp/metrics" "$scrape_dir/worker.txt"
kill $coordinator_pid $worker_pid 2>/dev/null || true
wait $coordinator_pid $worker_pid 2>/dev/null || true
trap - EXIT INT TERM
"$venv/bin/python" deploy/grafana/check.py docs/METRICS.md tests/tests/metrics.rs \
    deploy/grafana/sweep-cluster.json "$scrape_dir/coordinator.txt" "$scrape_dir/worker.txt"
# The overlay's scrape jobs, checked by promtool. Debian's Prometheus is built without
# Kubernetes service discovery, so each job's kubernetes_sd_configs is swapped for a static
# target, and the admin token's path for a file that exists; the rest (authorization,
# relabelling) is checked as written.
if command -v promtool > /dev/null; then
    "$venv/bin/python" - deploy/k8s/overlays/monitoring/scrape.yml "$PWD/$scrape_dir" <<'PY'
import sys, yaml
jobs, out = yaml.safe_load(open(sys.argv[1])), sys.argv[2]
open(f"{out}/admin-token", "w").write("x")
for job in jobs:
    assert job.pop("kubernetes_sd_configs"), job["job_name"]
    job["static_configs"] = [{"targets": ["127.0.0.1:1"]}]
    if "authorization" in job:
        job["authorization"]["credentials_file"] = f"{out}/admin-token"
yaml.safe_dump({"scrape_configs": jobs}, open(f"{out}/prometheus.yml", "w"))
PY
    promtool check config "$scrape_dir/prometheus.yml"
else
    echo "check-deploy: no promtool (Debian's prometheus package); the overlay's scrape jobs were not checked"
fi
echo "check-deploy: all deployment checks passed"
